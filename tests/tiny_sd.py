"""Tiny random Stable Diffusion folders for tests (no network), as diffusers' own tests build them.

``write_tiny_sd(path, xl=False)`` writes a diffusers pipeline folder (model_index.json, unet/,
vae/, text_encoder/, tokenizer/, scheduler/ and for ``xl`` text_encoder_2/ + tokenizer_2/) with
randomly initialised components from small configs: a 2-level UNet2DConditionModel (32 px
latents of 4 channels, cross-attention width 32; SDXL-style "text_time" added conditioning for
``xl``), a 2-level AutoencoderKL (factor 2) and CLIP text encoders with a byte-level tokenizer
whose vocabulary is written here, so loading takes the same code path as a real model.
"""
from __future__ import annotations

import json
from pathlib import Path


def _byte_chars() -> list[str]:
    """The 256 printable stand-ins for bytes of byte-level BPE (GPT-2 / CLIP)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _clip_tokenizer(dir_: Path):
    """A CLIPTokenizer over single bytes (every word splits into byte tokens; no merges)."""
    from transformers import CLIPTokenizer

    chars = _byte_chars()
    vocab = {}
    for c in chars:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    for t in ("<|startoftext|>", "<|endoftext|>"):
        vocab[t] = len(vocab)
    dir_.mkdir(parents=True, exist_ok=True)
    (dir_ / "vocab.json").write_text(json.dumps(vocab))
    (dir_ / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(dir_ / "vocab.json"), str(dir_ / "merges.txt"), model_max_length=77)
    return tok, len(vocab)


def write_tiny_sd(path: str | Path, *, xl: bool = False, seed: int = 0) -> Path:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tok, vocab = _clip_tokenizer(path / "_vocab")
    text_cfg = dict(vocab_size=vocab, hidden_size=32, intermediate_size=37, num_attention_heads=4,
                    num_hidden_layers=2, max_position_embeddings=77, bos_token_id=vocab - 2, eos_token_id=vocab - 1,
                    pad_token_id=vocab - 1, projection_dim=32)
    unet_kw = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                   block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                   up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=32,
                   attention_head_dim=(2, 4), cross_attention_dim=32)
    if xl:
        unet_kw.update(cross_attention_dim=64, addition_embed_type="text_time", addition_time_embed_dim=8,
                       projection_class_embeddings_input_dim=32 + 6 * 8)
    UNet2DConditionModel(**unet_kw).save_pretrained(path / "unet", safe_serialization=True)
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), latent_channels=4,
                  norm_num_groups=32, sample_size=32).save_pretrained(path / "vae", safe_serialization=True)
    CLIPTextModel(CLIPTextConfig(**text_cfg)).save_pretrained(path / "text_encoder", safe_serialization=True)
    tok.save_pretrained(path / "tokenizer")
    DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").save_pretrained(path / "scheduler")
    index = {"_class_name": "StableDiffusionXLPipeline" if xl else "StableDiffusionPipeline",
             "_diffusers_version": "0.42.1",
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "scheduler": ["diffusers", "DDIMScheduler"]}
    if xl:
        CLIPTextModelWithProjection(CLIPTextConfig(**text_cfg)).save_pretrained(path / "text_encoder_2",
                                                                               safe_serialization=True)
        tok.save_pretrained(path / "tokenizer_2")
        index.update(text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
                     tokenizer_2=["transformers", "CLIPTokenizer"])
    (path / "model_index.json").write_text(json.dumps(index, indent=1))
    return path
