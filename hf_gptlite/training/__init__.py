"""The generic training loop (Accelerate): steps, evaluation, checkpoints, artifacts. It knows no task.

    loop.py         TrainingConfig, Trainer / train (the step semantics, loss-only evaluate + the task's metric
                    function, samples, logging)
    batches.py      the continuing micro-batch stream (epochs never split a step), label items, capped eval passes
    step.py         one update: accumulation with no_sync, the token-weighted loss, the shared NaN decision, clip
    budget.py       the time budget as a step plan, decided on the main process's clock and broadcast
    optim.py        parameter groups, AdamW, warmup + cosine
    checkpoints.py  list / resolve / save / load, atomic
    artifacts.py    metrics.json, loss curve, LoRA attach and merge-and-save
"""

from .artifacts import plot_loss_curve, read_log, write_metrics
from .batches import MicroBatchStream, count_items, loss_shifts_labels, loss_takes_num_items
from .budget import TimeBudget
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
from .step import StepResult, TrainStep

__all__ = [
    "TrainingConfig", "Trainer", "TrainingDivergedError", "EvalLoss", "train", "resolve_mixed_precision",
    "distributed_state", "parameter_groups", "create_optimizer", "WarmupCosine", "list_checkpoints",
    "resolve_checkpoint", "plot_loss_curve", "read_log", "write_metrics", "MicroBatchStream", "count_items",
    "loss_shifts_labels", "loss_takes_num_items", "TimeBudget", "StepResult", "TrainStep",
]
