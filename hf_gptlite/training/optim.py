"""Optimizer and learning-rate schedule of the training loop: AdamW with decay groups, warmup + cosine."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

_BLOCK_INDEX = re.compile(r"(?:^|\.)(?:h|layers|layer|blocks)\.(\d+)\.")


def parameter_groups(model: nn.Module, weight_decay: float, layer_lr_decay: float = 1.0,
                     learning_rate: float | None = None) -> list[dict]:
    """AdamW groups: decay on matrices of linear layers; none on biases, norms and embeddings (a tied LM head shares
    the embedding's parameter, so it is not decayed either).

    ``layer_lr_decay`` < 1 adds discriminative learning rates (ULMFiT's, as layer-wise decay): the parameters after
    the last block (final norm, a classification head) train at ``learning_rate``, block ``i`` of ``L`` at
    ``learning_rate * layer_lr_decay ** (L - i)``, the embeddings at ``layer_lr_decay ** (L + 1)`` of it. Blocks are
    found by name (``h.3.``, ``layers.3.``, also inside a PEFT wrapper); the schedule scales every group alike."""
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    depth = {}
    for name, p in named:
        match = _BLOCK_INDEX.search(name)
        depth[id(p)] = int(match.group(1)) if match else None
    num_blocks = 1 + max((d for d in depth.values() if d is not None), default=-1)
    groups: dict[tuple[bool, float], list] = {}
    for _, p in named:
        decayed = not (p.ndim < 2 or id(p) in embedding_params)
        scale = 1.0
        if layer_lr_decay != 1.0:
            if id(p) in embedding_params:
                scale = layer_lr_decay ** (num_blocks + 1)
            elif depth[id(p)] is not None:
                scale = layer_lr_decay ** (num_blocks - depth[id(p)])
        groups.setdefault((decayed, scale), []).append(p)
    if layer_lr_decay == 1.0:  # the two plain groups, both always present
        return [{"params": groups.get((True, 1.0), []), "weight_decay": weight_decay},
                {"params": groups.get((False, 1.0), []), "weight_decay": 0.0}]
    if learning_rate is None:
        raise ValueError("parameter_groups: layer_lr_decay needs the base learning_rate")
    return [{"params": ps, "weight_decay": weight_decay if decayed else 0.0, "lr": learning_rate * scale}
            for (decayed, scale), ps in sorted(groups.items(), key=lambda kv: (-kv[0][1], not kv[0][0]))]


def create_optimizer(model: nn.Module, config, device: torch.device) -> torch.optim.AdamW:
    """AdamW with decay groups from a ``TrainingConfig``; the fused kernel on CPU and CUDA (on this 2-core CPU it
    measured 7.7x faster than the foreach kernel for the 124M shape), the multi-tensor (foreach) one elsewhere."""
    kwargs = dict(lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon)
    if device.type in ("cpu", "cuda"):
        kwargs["fused"] = True
    else:
        kwargs["foreach"] = True
    groups = parameter_groups(model, config.weight_decay, config.layer_lr_decay, config.learning_rate)
    return torch.optim.AdamW(groups, **kwargs)


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
