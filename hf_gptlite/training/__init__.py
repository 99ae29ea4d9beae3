"""The generic training loop (Accelerate): steps, evaluation, checkpoints, artifacts. It knows no task.

    loop.py         TrainingConfig, Trainer / train (steps, loss-only evaluate + the task's metric function,
                    samples, time budget)
    optim.py        parameter groups, AdamW, warmup + cosine
    checkpoints.py  list / resolve / save / load, atomic
    artifacts.py    metrics.json, loss curve, LoRA attach and merge-and-save
"""

from .artifacts import plot_loss_curve, read_log, write_metrics
from .checkpoints import list_checkpoints, resolve_checkpoint
from .loop import (
    EvalLoss,
    Trainer,
    TrainingConfig,
    TrainingDivergedError,
    distributed_state,
    resolve_mixed_precision,
    train,
)
from .optim import WarmupCosine, create_optimizer, parameter_groups

__all__ = [
    "TrainingConfig", "Trainer", "TrainingDivergedError", "EvalLoss", "train", "resolve_mixed_precision",
    "distributed_state", "parameter_groups", "create_optimizer", "WarmupCosine", "list_checkpoints",
    "resolve_checkpoint", "plot_loss_curve", "read_log", "write_metrics",
]
