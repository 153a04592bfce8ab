"""Tiny halves and a training loop shared by the extension, prefix, fine-tuning and rescoring tests."""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import tiny_encoder_dir
from transformers import GPT2Config, LlamaConfig

NO_DROPOUT = dict(
    hidden_dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    feat_proj_dropout=0.0,
    final_dropout=0.0,
    mask_time_prob=0.0,
    layerdrop=0.0,
)


def stable_encoder_dir(root: Path) -> Path:
    """wav2vec2 with layer-norm feature encoder (the "large-lv60" layout): padding-exact with a mask,
    unlike group norm, whose statistics include the padded samples."""
    return tiny_encoder_dir(
        Path(root), "wav2vec2", feat_extract_norm="layer", do_stable_layer_norm=True, **NO_DROPOUT
    )


def tiny_llama_dir(root: Path) -> Path:
    path = Path(root) / "llama"
    LlamaConfig(
        vocab_size=99,
        hidden_size=16,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
    ).save_pretrained(path)
    return path


def tiny_gpt2_dir(root: Path) -> Path:
    """GPT-2 as LLMs ship it: no pad token, BOS = EOS, no cross-attention."""
    path = Path(root) / "gpt2"
    GPT2Config(
        vocab_size=99,
        n_embd=16,
        n_layer=2,
        n_head=2,
        n_positions=512,
        bos_token_id=98,
        eos_token_id=98,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    ).save_pretrained(path)
    return path


def waves(lengths: tuple[int, ...] = (4000, 2600), seed: int = 1) -> dict[str, torch.Tensor]:
    """Zero-padded raw audio of different lengths with its attention mask."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    values = torch.zeros(len(lengths), width)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        values[i, :n] = torch.randn(n, generator=g)
        mask[i, :n] = 1
    return {"input_values": values, "attention_mask": mask}


def row(batch: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """Example i of a padded batch, alone and unpadded."""
    n = int(batch["attention_mask"][i].sum())
    return {k: v[i : i + 1, :n] for k, v in batch.items()}


def train_steps(model, batch: dict, steps: int, lr: float = 1e-3, **forward_kwargs) -> list[float]:
    """Adam on a fixed batch; returns the loss before every step (in train mode)."""
    torch.manual_seed(0)
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(**batch, **forward_kwargs).loss
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return losses
