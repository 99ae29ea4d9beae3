"""The settings of the training loop: ``TrainingConfig`` (the knobs every recipe shares), the tracker list of
``report_to``, the precision ``auto`` resolves to, and the process state accelerate will see."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

# report_to name -> the module accelerate needs for it
TRACKER_MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "comet_ml": "comet_ml",
                   "mlflow": "mlflow", "aim": "aim", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab"}


def tracker_names(spec: str) -> list[str]:
    """``report_to`` as a list of lower-case names: 'auto', 'none' and 'all' come back as one-item lists."""
    return [t.strip() for t in spec.lower().split(",") if t.strip()]


def check_report_to(spec: str) -> None:
    """``report_to`` is auto, none, all or a comma list of installed trackers; otherwise a ValueError that names the
    tracker and how to fix it (checked with the other flags, before a run writes anything)."""
    import importlib.util

    names = tracker_names(spec)
    if names in ([], ["auto"], ["none"], ["all"]):
        return
    for name in names:
        if name not in TRACKER_MODULES:
            raise ValueError(f"report_to: unknown tracker {name!r}; use auto, none, all or a comma list of "
                             f"{', '.join(TRACKER_MODULES)}")
        if importlib.util.find_spec(TRACKER_MODULES[name]) is None:
            raise ValueError(f"report_to: {name} is not installed; pip install {TRACKER_MODULES[name]}, or use "
                             "--report_to auto (the trackers that are installed) or none")


@dataclass
class TrainingConfig:
    """The knobs every recipe shares. Recipes embed these fields in their own config dataclass."""

    output_dir: str = field(default="runs/gptlite", metadata={"help": "where checkpoints, logs and the model go"})
    seed: int = field(default=42, metadata={"help": "seeds python, numpy and torch (and the data order)"})
    max_steps: int = field(default=-1, metadata={"help": "optimizer updates; <= 0: num_epochs over the data"})
    num_epochs: float = field(default=1.0, metadata={"help": "passes over the training data when max_steps <= 0"})
    max_train_minutes: float | None = field(
        default=None,
        metadata={"help": "time budget (None or 0: none): lowers max_steps and the cosine horizon to end on time"},
    )
    per_device_batch_size: int = field(default=16, metadata={"help": "sequences per batch on each process"})
    per_device_eval_batch_size: int | None = field(default=None, metadata={"help": "None: per_device_batch_size"})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "micro-batches per process in each optimizer update (the loss: a mean over all)"}
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW decay (never on norms, biases, embeddings)"})
    layer_lr_decay: float = field(default=1.0, metadata={
        "help": "discriminative learning rates: block i of L trains at learning_rate * decay**(L - i), the embeddings "
                "at decay**(L + 1), the final norm and head at learning_rate (1: off)"})
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_epsilon: float = 1e-8
    warmup_steps: int = field(default=0, metadata={"help": "linear warmup steps"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "the cosine ends at learning_rate * min_lr_ratio"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping; <= 0: off"})
    logging_steps: int = field(default=10, metadata={"help": "log train loss/lr every N steps"})
    eval_steps: int = field(default=0, metadata={"help": "evaluate every N steps (0: only at the end)"})
    eval_max_batches: int | None = field(
        default=None, metadata={"help": "cap periodic evaluations at N >= 1 batches (the final one uses all)"}
    )
    save_steps: int = field(default=0, metadata={"help": "checkpoint every N steps (0: no checkpoints)"})
    save_total_limit: int = field(default=2, metadata={"help": "keep the last K checkpoints"})
    sample_steps: int = field(default=0, metadata={"help": "generate a sample every N steps (0: only at the end)"})
    sample_prompt: str | None = field(default=None, metadata={"help": "prompt for samples (None: no samples)"})
    sample_max_new_tokens: int = 60
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' (newest in output_dir/checkpoints) or a checkpoint folder"}
    )
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "a fresh run into an output_dir that holds a run: clear the old run's files (checkpoints, log, "
                "metrics, weights) first; without it such a run is refused"})
    mixed_precision: str = field(
        default="auto",
        metadata={"help": "auto (accelerate launch's / accelerate config's choice, else bf16 where the hardware has "
                          "it) | no | bf16 | fp16"}
    )
    report_to: str = field(
        default="auto", metadata={"help": "auto (tensorboard/trackio if installed) | none | comma list of trackers"}
    )
    project_name: str = field(default="gptlite", metadata={"help": "tracker project / run name"})

    def __post_init__(self):
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be auto|no|bf16|fp16, got {self.mixed_precision!r}")
        check_report_to(self.report_to)
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise ValueError(f"layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}")
        for name in ("per_device_batch_size", "gradient_accumulation_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_steps", "save_steps", "sample_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.max_steps <= 0 and self.num_epochs <= 0:
            raise ValueError("set max_steps > 0 or num_epochs > 0")
        if self.save_total_limit < 1:
            raise ValueError(f"save_total_limit must be >= 1, got {self.save_total_limit}")
        if self.eval_max_batches is not None and self.eval_max_batches < 1:
            raise ValueError(f"eval_max_batches must be None (all batches) or >= 1, got {self.eval_max_batches}: "
                             "an evaluation of no batches has no loss")


# ---- hardware ------------------------------------------------------------------------------------
def resolve_mixed_precision(requested: str = "auto") -> str:
    """``auto`` -> the launcher's choice when there is one: ``ACCELERATE_MIXED_PRECISION``, which ``accelerate launch
    --mixed_precision`` and the ``mixed_precision`` of an ``accelerate config`` file set (``accelerate launch`` with
    neither sets ``no``), or the variable set by hand. Without one: ``bf16`` only where bf16 math is fast: a CUDA GPU
    with bf16, or a CPU with AMX / AVX512-BF16 (on AVX2-only CPUs bf16 is emulated, tens of times slower than fp32);
    ``fp16`` on older CUDA GPUs; else ``no``. Any other value is the run's own explicit choice and wins."""
    if requested != "auto":
        return requested
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "").strip().lower()
    if launcher:
        return launcher
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    cpu = torch.cpu
    if getattr(cpu, "_is_amx_tile_supported", lambda: False)() or getattr(cpu, "_is_avx512_bf16_supported", lambda: False)():
        return "bf16"
    return "no"


def destroy_process_group_at_exit() -> None:
    """Once per process: destroy the process group when the interpreter exits (the loop keeps it between runs)."""
    global _EXIT_HOOKED
    if not _EXIT_HOOKED:
        import atexit

        def destroy():
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()

        atexit.register(destroy)
        _EXIT_HOOKED = True


_EXIT_HOOKED = False


def distributed_state():
    """accelerate's ``PartialState`` as ``Accelerator`` will see it. Creating a bare ``PartialState()`` before the
    ``Accelerator`` would ignore ``ACCELERATE_USE_CPU`` and turn a multi-process CPU launch into one process."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


__all__ = ["TRACKER_MODULES", "tracker_names", "check_report_to", "TrainingConfig", "resolve_mixed_precision",
           "distributed_state", "destroy_process_group_at_exit"]
