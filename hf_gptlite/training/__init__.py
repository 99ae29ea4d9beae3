"""The generic training loop (Accelerate): steps, evaluation, checkpoints, artifacts. It knows no task.

    loop.py         Trainer / train: the step semantics, the run from its checks to the model folder
    config.py       TrainingConfig, report_to, the precision ``auto`` resolves to, the process state
    resume.py       the resume contract: what must match a checkpoint, what may change and how it takes effect
    evaluation.py   the loss over every evaluated item (gathered across processes), samples
    logs.py         log.jsonl, trackers, progress lines, the logged loss window
    batches.py      the continuing micro-batch stream (epochs never split a step), label items, capped eval passes
    step.py         one update: accumulation with no_sync, the token-weighted loss, the shared NaN decision, clip
    budget.py       the time budget as a step plan, decided on the main process's clock and broadcast
    optim.py        parameter groups, AdamW, warmup + cosine
    checkpoints.py  list / resolve / save, atomic; a run folder that already holds a run
    artifacts.py    metrics.json, loss curve, LoRA attach and merge-and-save, the model given back as it came
"""

from .artifacts import plot_loss_curve, read_log, write_metrics
from .batches import MicroBatchStream, count_items, loss_shifts_labels, loss_takes_num_items, steps_per_epoch
from .budget import TimeBudget
from .checkpoints import check_training_output, list_checkpoints, resolve_checkpoint
from .config import TrainingConfig, distributed_state, resolve_mixed_precision
from .evaluation import EvalLoss
from .loop import Trainer, TrainingDivergedError, train
from .optim import WarmupCosine, create_optimizer, parameter_groups
from .step import StepResult, TrainStep

__all__ = [
    "TrainingConfig", "Trainer", "TrainingDivergedError", "EvalLoss", "train", "resolve_mixed_precision",
    "distributed_state", "parameter_groups", "create_optimizer", "WarmupCosine", "list_checkpoints",
    "resolve_checkpoint", "plot_loss_curve", "read_log", "write_metrics", "MicroBatchStream", "count_items",
    "loss_shifts_labels", "loss_takes_num_items", "TimeBudget", "StepResult", "TrainStep", "steps_per_epoch",
    "check_training_output",
]
