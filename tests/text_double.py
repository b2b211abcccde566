"""Test doubles shared by the diffusion tests (nothing downloaded)."""
from __future__ import annotations

import hashlib

import numpy as np
import torch


class DummyTextEncoder:
    """Deterministic fake of backends.shapes.text.TextEncoder: one pseudo-random vector per word."""

    dim = 384

    def _word(self, w: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha1(w.encode("utf-8")).digest()[:4], "little")
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)

    def encode_tokens(self, texts, max_len=16):
        states = torch.zeros(len(texts), max_len, self.dim)
        mask = torch.zeros(len(texts), max_len, dtype=torch.bool)
        for i, t in enumerate(texts):
            words = ["[CLS]"] + t.lower().split()[: max_len - 2] + ["[SEP]"]
            for j, w in enumerate(words):
                states[i, j] = torch.from_numpy(self._word(w))
                mask[i, j] = True
        return states, mask

    def encode_pooled(self, texts):
        s, m = self.encode_tokens(texts, 64)
        v = (s * m[..., None]).sum(1) / m.sum(1, keepdim=True)
        return torch.nn.functional.normalize(v, dim=-1).numpy()

    def tokenize(self, text, max_len=16):
        return (["[CLS]"] + text.split() + ["[SEP]"])[:max_len]
