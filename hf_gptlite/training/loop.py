"""The one training loop every recipe shares, on ``accelerate.Accelerator``. It knows batches, losses and the
metric function a task hands it; nothing of any task.

    MicroBatchStream -> TrainStep: forward/backward x accumulation, token-weighted -> clip -> AdamW -> LR (step.py,
    (batches.py)                                                                         optim.py)
        -> TimeBudget plan (budget.py) -> log (tqdm, trackers, log.jsonl) -> evaluate (loss + the task's metrics)
        -> sample -> checkpoint (atomic, keep last K)                                      (checkpoints.py)
    end:    metrics.json, training_config.json, loss_curve.png, save_pretrained(model + tokenizer) (artifacts.py)

The same code runs under ``python`` (one process, CPU or one GPU) and ``accelerate launch`` (DDP, FSDP, ...).

What a step is, on any number of processes:

* A step is one optimizer update of exactly ``gradient_accumulation_steps`` micro-batches (``per_device_batch_size``
  examples each) per process. The data is one continuing stream: the next epoch's first batches complete a step the
  last epoch began, so an epoch end never forces, shortens or splits a step.
* Its loss is the mean over every label item (label tokens other than -100, ``labels[..., 1:]`` for a causal LM; for
  a classifier, examples) of all its micro-batches on all processes: the same update for 2 processes x accumulation 2
  as for 1 x 4, or 1 x 1 with 4x the batch, and a batch of 5 real tokens weighs 5/500 of one of 500 (step.py).
  This is transformers' ``num_items_in_batch`` with ``average_tokens_across_devices``.
* The accumulation is the loop's own (``accelerator.no_sync`` on all micro-batches but the last; the Accelerator is
  built with ``gradient_accumulation_steps=1`` and ``sync_with_dataloader=False``): ``accelerator.accumulate``
  counts micro-batches by itself and forces a step at every dataloader end, which splits steps at epoch ends and
  can leave the last gradients of a run unapplied.
* Decisions every process must share are made once: "some process saw a non-finite loss" is all-reduced (each
  process then raises the same ``TrainingDivergedError`` before the update, no checkpoint of the bad weights),
  "time is up" and the planned horizon come from the main process's clock (budget.py), capped by ``max_steps``.
* Checkpoints are written between steps (no pending gradients): a resumed run replays the interrupted step from its
  first micro-batch and ends with the weights of an uninterrupted run.
* The logged ``loss`` is the mean of the logged steps' losses (each the item-weighted mean above), ``grad_norm``
  the norm of the last step's whole gradient before clipping: what the updates used.

Use it with your own dataloaders; batches are dicts the model takes as keyword arguments (with ``labels``)::

    from hf_gptlite.training import TrainingConfig, train
    metrics = train(model, train_loader, eval_loader, tokenizer, TrainingConfig(output_dir="runs/x", max_steps=100))
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import (
    DataLoaderConfiguration,
    DistributedType,
    GradientAccumulationPlugin,
    ProjectConfiguration,
    parse_flag_from_env,
    set_seed,
)
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from .artifacts import LOG_FILE, plot_loss_curve, save_model_folder, write_metrics
from .batches import MicroBatchStream, loss_shifts_labels, take
from .budget import TimeBudget
from .checkpoints import list_checkpoints, load_checkpoint, save_checkpoint
from .optim import WarmupCosine, create_optimizer
from .step import TrainStep


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the run stopped without writing a checkpoint of the bad weights."""


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
    mixed_precision: str = field(
        default="auto", metadata={"help": "auto (bf16 where the hardware has it) | no | bf16 | fp16"}
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


# ---- data ----------------------------------------------------------------------------------------
def _prepare_train_dataloader(acc: Accelerator, loader):
    """``acc.prepare(loader)``; but a dataset that each process already reads its own part of (``split_by_process``:
    a stream split by node) is neither sharded again nor dispatched from process 0: its batches are only placed on
    the device."""
    if acc.num_processes == 1 or not getattr(loader.dataset, "split_by_process", False):
        return acc.prepare(loader)
    from accelerate.data_loader import prepare_data_loader

    return prepare_data_loader(loader, acc.device, num_processes=1, process_index=0, put_on_device=True,
                               dispatch_batches=False, rng_types=None)


# ---- hardware ------------------------------------------------------------------------------------
def resolve_mixed_precision(requested: str = "auto") -> str:
    """``auto`` -> ``bf16`` only where bf16 math is fast: a CUDA GPU with bf16, or a CPU with AMX /
    AVX512-BF16 (on AVX2-only CPUs bf16 is emulated, tens of times slower than fp32); ``fp16`` on older
    CUDA GPUs; else ``no``."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    cpu = torch.cpu
    if getattr(cpu, "_is_amx_tile_supported", lambda: False)() or getattr(cpu, "_is_avx512_bf16_supported", lambda: False)():
        return "bf16"
    return "no"


def distributed_state():
    """accelerate's ``PartialState`` as ``Accelerator`` will see it. Creating a bare ``PartialState()`` before the
    ``Accelerator`` would ignore ``ACCELERATE_USE_CPU`` and turn a multi-process CPU launch into one process."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def _destroy_process_group_at_exit() -> None:
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


def _length(loader) -> int | None:
    """Batches in one pass; None for streamed data (a DataLoader over an IterableDataset raises TypeError)."""
    try:
        return len(loader)
    except TypeError:
        return None


# ---- the loop ------------------------------------------------------------------------------------
@dataclass
class EvalLoss:
    """What the loop measured at an evaluation, handed to the task's metric function."""

    loss: float | None  # mean over every evaluated item (label token, or example), all processes
    num_items: int  # items scored
    complete: bool  # True when every evaluation batch was seen (no ``eval_max_batches`` cap)


class Trainer:
    """Trains ``model`` on ``train_dataloader``; see the module docstring.

    ``compute_metrics(model, accelerator, eval_loss: EvalLoss)`` is the task's metric function: called on every
    process at each evaluation with the unwrapped model and the measured loss, it returns the task's own metrics
    (e.g. ``pretrain/metrics.py``)."""

    def __init__(
        self,
        model: nn.Module,
        train_dataloader,
        eval_dataloader=None,
        tokenizer=None,
        config: TrainingConfig | None = None,
        compute_metrics: Callable[[nn.Module, Accelerator, EvalLoss], dict[str, float]] | None = None,
        run_config: dict | None = None,
    ):
        self.config = config or TrainingConfig()
        self.tokenizer = tokenizer
        self.compute_metrics = compute_metrics
        self.run_config = run_config if run_config is not None else dataclasses.asdict(self.config)
        self.output_dir = Path(self.config.output_dir)
        c = self.config

        set_seed(c.seed)
        # Accelerate keeps one AcceleratorState per process: a second run in the same Python session (a notebook,
        # pretraining then fine-tuning, a test suite) with another precision must start from a clean one. The
        # process group (PartialState) is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
        _destroy_process_group_at_exit()
        self.accelerator = Accelerator(
            mixed_precision=resolve_mixed_precision(c.mixed_precision),
            # the loop accumulates itself (step.py): accelerate must never step on its own at a dataloader's end
            gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=1, sync_with_dataloader=False),
            log_with=self._trackers(),
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "tensorboard")
            ),
            step_scheduler_with_optimizer=False,  # we step it once per optimizer update, on every process count
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),  # order = f(seed, epoch)
        )
        acc = self.accelerator
        if parse_flag_from_env("ACCELERATE_USE_FSDP") and acc.distributed_type != DistributedType.FSDP:
            self._print(f"warning: an FSDP launch config, but accelerate runs {acc.distributed_type.value} here "
                        "(accelerate 1.15 has no FSDP on CPU): every process holds the whole model")
        for name, loader in (("training", train_dataloader), ("evaluation", eval_dataloader)):
            if loader is not None and _length(loader) == 0:
                raise ValueError(f"the {name} dataloader yields no batches (is the {name} data empty?)"
                                 + (" Pass eval_dataloader=None to train without evaluation." if name[0] == "e" else ""))
        optimizer = create_optimizer(model, c, acc.device)
        steps_per_epoch = self._steps_per_epoch(train_dataloader, acc.num_processes)
        if c.max_steps > 0:
            total = c.max_steps
        elif steps_per_epoch is None:
            raise ValueError("the training data has no length (streaming): set max_steps")
        else:
            total = max(1, math.ceil(c.num_epochs * steps_per_epoch))
        self._planned_steps = total  # the cap of a time budget
        self.schedule = WarmupCosine(c.warmup_steps, total, c.min_lr_ratio)
        scheduler = LambdaLR(optimizer, self.schedule)
        self.model, self.optimizer, self.scheduler = acc.prepare(model, optimizer, scheduler)
        self.train_dataloader = _prepare_train_dataloader(acc, train_dataloader)
        self.eval_dataloader = acc.prepare(eval_dataloader) if eval_dataloader is not None else None
        self.stream = MicroBatchStream(self.train_dataloader, acc)  # its position is saved in checkpoints
        self.step = TrainStep(acc, self.model, self.optimizer, c.max_grad_norm)
        self.global_step = 0
        self.train_tokens = 0  # tokens seen by all processes
        self.train_seconds = 0.0  # time in forward/backward/step only
        self.history: list[dict] = []

    # -- set-up helpers
    def _trackers(self) -> list[str] | None:
        import importlib.util

        names = tracker_names(self.config.report_to)
        if names in ([], ["none"]):
            return None
        if names == ["auto"]:
            return [t for t in ("tensorboard", "trackio") if importlib.util.find_spec(t)] or None
        return names

    def _steps_per_epoch(self, dataloader, num_processes: int) -> float | None:
        """Steps in one pass over the data (a fraction: the stream goes on into the next pass)."""
        n = _length(dataloader)  # batches in one pass, before accelerate splits them across processes
        return None if n is None else math.ceil(n / num_processes) / self.config.gradient_accumulation_steps

    @property
    def total_steps(self) -> int:
        return self.schedule.total_steps

    @property
    def epoch(self) -> int:
        return self.stream.epoch

    def _model_summary(self) -> dict:
        model = self.accelerator.unwrap_model(self.model)
        cfg = getattr(model, "config", None)
        keys = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings")
        return {k: getattr(cfg, k) for k in keys if cfg is not None and hasattr(cfg, k)}

    # -- logging
    def _log(self, record: dict) -> None:
        record = {"step": self.global_step, **record}
        self.history.append(record)
        if self.accelerator.is_main_process:
            with open(self.output_dir / LOG_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")
        values = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
        self.accelerator.log(values, step=self.global_step)

    def _print(self, text: str) -> None:
        if self.accelerator.is_main_process:
            tqdm.write(text)

    # -- checkpoints
    def save_checkpoint(self) -> Path:
        acc = self.accelerator
        state = {
            "global_step": self.global_step, **self.stream.state(),  # between steps: no gradient is pending
            "gradient_accumulation_steps": self.config.gradient_accumulation_steps,
            "total_steps": self.total_steps, "train_tokens": self.train_tokens,
            "train_seconds": self.train_seconds, "num_processes": acc.num_processes,
            "model_class": type(acc.unwrap_model(self.model)).__name__, "model_summary": self._model_summary(),
        }
        return save_checkpoint(acc, self.output_dir, self.global_step, state, self.config.save_total_limit)

    def load_checkpoint(self, spec: str) -> Path:
        acc = self.accelerator
        path, state = load_checkpoint(acc, spec, self.output_dir, acc.unwrap_model(self.model))
        if state.get("num_processes", acc.num_processes) != acc.num_processes:
            self._print(
                f"warning: checkpoint was written by {state['num_processes']} processes, resuming on "
                f"{acc.num_processes}; the data order after resume will differ"
            )
        self.global_step = state["global_step"]
        self.stream.close()
        self.stream = MicroBatchStream(self.train_dataloader, acc, state["epoch"], state["batches_into_epoch"])
        self.schedule.total_steps = state["total_steps"]
        self.train_tokens = state["train_tokens"]
        self.train_seconds = state["train_seconds"]
        # keep the log of the run up to the checkpoint; drop what the interrupted run wrote after it
        log = self.output_dir / LOG_FILE
        if acc.is_main_process and log.exists():
            kept = [r for r in map(json.loads, log.read_text().splitlines()) if r.get("step", 0) <= self.global_step]
            log.write_text("".join(json.dumps(r) + "\n" for r in kept))
            self.history = kept
        self._print(f"resumed from {path} at step {self.global_step}")
        return path

    # -- evaluation and samples
    @torch.no_grad()
    def evaluate(self, max_batches: int | None = None) -> dict[str, float]:
        """``eval_loss``: the mean loss over every evaluated item, gathered across processes (per label token
        for causal LMs, per example otherwise), then the task's ``compute_metrics``. An evaluation that scores
        nothing (no batches, every label -100) raises ``ValueError``: it has no loss, and 0 would read as perfect."""
        if max_batches is not None and max_batches < 1:
            raise ValueError(f"eval_max_batches must be None (all batches) or >= 1, got {max_batches}")
        acc, model = self.accelerator, self.model
        model.eval()
        metrics: dict[str, float] = {}
        measured = EvalLoss(None, 0, max_batches is None)
        if self.eval_dataloader is not None:
            shifted = loss_shifts_labels(acc.unwrap_model(model))
            total_loss = torch.zeros((), dtype=torch.float64, device=acc.device)
            total_count = torch.zeros((), dtype=torch.float64, device=acc.device)
            for batch in take(self.eval_dataloader, max_batches):
                out = model(**batch)
                nats, count = self._loss_per_example(out, batch, shifted)
                nats, count = acc.gather_for_metrics((nats.double(), count.double()))
                total_loss += nats.sum()
                total_count += count.sum()
            if total_count.item() == 0:  # the same on every process (gathered)
                raise ValueError(
                    "the evaluation scored no items: the evaluation data yields no batches or only labels of -100 "
                    f"(eval_max_batches={max_batches}). Pass eval_dataloader=None to train without evaluation."
                )
            measured.loss = (total_loss / total_count).item()
            measured.num_items = int(total_count.item())
            metrics["eval_loss"] = measured.loss
        if self.compute_metrics is not None:
            metrics.update(self.compute_metrics(acc.unwrap_model(model), acc, measured))
        model.train()
        return metrics

    @staticmethod
    def _loss_per_example(out, batch: dict, shifted: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed loss, number of items) per example, (B,) each: exact per-token sums for a causal LM, so the
        gathered mean does not depend on how the examples fall into batches and processes."""
        labels = batch.get("labels")
        if shifted and labels is not None:
            logits, targets = out.logits[:, :-1].float(), labels[:, 1:]
            nats = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100,
                                   reduction="none").view(targets.shape).sum(1)
            return nats, (targets != -100).sum(1)
        n = next(iter(batch.values())).shape[0]
        return out.loss.detach().float().expand(n), torch.ones(n, device=out.loss.device)

    @torch.no_grad()
    def sample(self, prompt: str | None = None) -> str | None:
        """Generate a continuation of ``prompt`` (top-k sampling with a fixed seed, on a forked RNG so it
        does not change the training run)."""
        prompt = prompt if prompt is not None else self.config.sample_prompt
        if not prompt or self.tokenizer is None:
            return None
        model = self.accelerator.unwrap_model(self.model)
        if not hasattr(model, "generate"):
            return None
        model.eval()
        try:
            inputs = self.tokenizer(prompt, return_tensors="pt").to(self.accelerator.device)
            with torch.random.fork_rng(devices=[self.accelerator.device] if self.accelerator.device.type == "cuda" else []):
                torch.manual_seed(self.config.seed)
                with self.accelerator.autocast():
                    ids = model.generate(
                        **inputs, max_new_tokens=self.config.sample_max_new_tokens, do_sample=True, top_k=50,
                        temperature=0.8, pad_token_id=self.tokenizer.pad_token_id,
                    )
            return self.tokenizer.decode(ids[0], skip_special_tokens=True)
        finally:
            model.train()

    # -- training
    def train(self) -> dict[str, float]:
        c, acc = self.config, self.accelerator
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "training_config.json").write_text(json.dumps(self.run_config, indent=2, default=str))
        acc.wait_for_everyone()
        if c.resume_from_checkpoint:
            self.load_checkpoint(c.resume_from_checkpoint)
        elif acc.is_main_process and (self.output_dir / LOG_FILE).exists():
            (self.output_dir / LOG_FILE).unlink()  # a fresh run starts a fresh log
        acc.init_trackers(c.project_name, config={k: v for k, v in dataclasses.asdict(c).items()
                                                  if isinstance(v, (int, float, str, bool))})
        n_params = sum(p.numel() for p in acc.unwrap_model(self.model).parameters())
        self._print(
            f"training {n_params / 1e6:.2f}M parameters on {acc.num_processes} process(es), device {acc.device}, "
            f"mixed precision {acc.mixed_precision}, {self.total_steps} steps of "
            f"{c.per_device_batch_size}x{acc.num_processes}x{c.gradient_accumulation_steps} sequences"
        )
        if self.global_step == 0 and self.eval_dataloader is not None and c.eval_steps:
            self._log(self.evaluate(c.eval_max_batches))  # the starting point of the eval curve

        bar = tqdm(total=self.total_steps, initial=self.global_step, desc="train", disable=not acc.is_local_main_process,
                   dynamic_ncols=True)
        budget = None
        if c.max_train_minutes and c.max_train_minutes > 0:
            budget = TimeBudget(acc, c.max_train_minutes, cap=self._planned_steps, initial=self.total_steps)
            budget.start(self.global_step)
        start = time.perf_counter()
        window_losses, window_tokens, window_time = [], 0, 0.0
        last_saved, grad_norm, time_up = None, None, False
        self.model.train()
        while self.global_step < self.total_steps:
            t0 = time.perf_counter()
            result = self.step.forward_backward(self.stream.take(c.gradient_accumulation_steps))
            if not result.finite:  # decided across processes: every one raises here, before the update
                self._diverged(f"loss became {result.loss}", last_saved)
            grad_norm = self.step.clip()
            if grad_norm is not None and not math.isfinite(grad_norm) and acc.mixed_precision != "fp16":
                self._diverged(f"the gradient norm became {grad_norm}", last_saved)  # fp16: the scaler skips it
            self.step.update()
            self.global_step += 1
            if budget is not None:  # the plan of the main process, shared; it sets the LR of the next steps
                self.schedule.total_steps, time_up = budget.update(self.global_step)
            if not self.step.skipped:  # fp16 overflow skips the update and the schedule
                self.scheduler.step()
            window_losses.append(result.loss)
            window_tokens += result.num_tokens
            self.train_tokens += result.num_tokens
            dt = time.perf_counter() - t0
            self.train_seconds += dt
            window_time += dt
            bar.total = self.total_steps
            bar.update(1)
            final = time_up or self.global_step >= self.total_steps

            if self.global_step % c.logging_steps == 0 or final:
                mean_loss = sum(window_losses) / len(window_losses)
                record = {"loss": mean_loss, "learning_rate": self.scheduler.get_last_lr()[0],
                          "tokens_per_s": window_tokens / max(window_time, 1e-9), "epoch": self.epoch,
                          "elapsed_s": time.perf_counter() - start}
                if grad_norm is not None:
                    record["grad_norm"] = grad_norm
                self._log(record)
                bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{record['learning_rate']:.2e}",
                                tok_s=f"{record['tokens_per_s']:.0f}")
                window_losses, window_tokens, window_time = [], 0, 0.0
            if not final and c.eval_steps and self.global_step % c.eval_steps == 0 and self.eval_dataloader is not None:
                metrics = self.evaluate(c.eval_max_batches)
                self._log(metrics)
                self._print(f"step {self.global_step}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
            if not final and c.sample_steps and self.global_step % c.sample_steps == 0:
                text = self.sample()
                if text is not None:
                    self._print(f"step {self.global_step} sample: {text!r}")
            if c.save_steps and (self.global_step % c.save_steps == 0 or final):
                last_saved = self.save_checkpoint()
        if time_up:
            self._print(f"time budget of {c.max_train_minutes} min reached at step {self.global_step}")
        self.stream.close()
        bar.close()
        return self._finish(time.perf_counter() - start)

    def _diverged(self, what: str, last_saved: Path | None):
        found = list_checkpoints(self.output_dir)
        keep = last_saved or (found[-1] if found else None)
        where = f"the last good checkpoint is {keep}" if keep else "no checkpoint was written"
        self._end()
        raise TrainingDivergedError(
            f"{what} at step {self.global_step + 1}; stopped without saving the bad weights "
            f"({where}). Try a lower learning_rate, more warmup_steps, or mixed_precision='no'."
        )

    def _finish(self, wall_seconds: float) -> dict[str, float]:
        acc = self.accelerator
        metrics: dict[str, Any] = {}
        if self.eval_dataloader is not None or self.compute_metrics is not None:
            final = self.evaluate()
            self._log(final)
            metrics.update(final)
            self._print("final evaluation: " + ", ".join(f"{k}={v:.4g}" for k, v in final.items()))
        train_losses = [r["loss"] for r in self.history if "loss" in r]
        metrics.update({
            "train_loss": train_losses[-1] if train_losses else float("nan"),
            "global_step": self.global_step,
            "train_runtime_s": wall_seconds,
            "train_tokens": self.train_tokens,
            "tokens_per_s": self.train_tokens / max(self.train_seconds, 1e-9),
            "num_parameters": sum(p.numel() for p in acc.unwrap_model(self.model).parameters()),
            "num_processes": acc.num_processes,
            "mixed_precision": acc.mixed_precision,
        })
        text = self.sample()
        if text is not None:
            metrics["sample"] = text
            self._print(f"sample: {text!r}")
        self.save_model(self.output_dir)
        if acc.is_main_process:
            write_metrics(self.output_dir, metrics)
            plot_loss_curve(self.output_dir / LOG_FILE, self.output_dir / "loss_curve.png")
        self._end()
        return metrics

    def _end(self) -> None:
        """Close the data stream and the trackers. Not ``accelerator.end_training()``: it destroys the process group,
        and the next run in this process (a notebook, pretraining then fine-tuning, a sweep under one
        ``accelerate launch``) keeps the process group (``PartialState``); it is destroyed at exit."""
        self.stream.close()
        for tracker in self.accelerator.trackers:
            tracker.finish()

    def save_model(self, directory: str | os.PathLike) -> None:
        """The model folder (``artifacts.save_model_folder``: safetensors, tokenizer, LoRA merged) on the main
        process, at the end of training."""
        acc = self.accelerator
        acc.wait_for_everyone()
        state_dict = acc.get_state_dict(self.model)  # gathers FSDP shards; on all processes
        if acc.is_main_process:
            save_model_folder(acc.unwrap_model(self.model), directory, self.tokenizer, state_dict=state_dict)
        acc.wait_for_everyone()


def train(model, train_dataloader, eval_dataloader=None, tokenizer=None, config: TrainingConfig | None = None,
          compute_metrics=None, run_config: dict | None = None) -> dict:
    """Build a :class:`Trainer` and run it; returns the final metrics (also in ``output_dir/metrics.json``)."""
    return Trainer(model, train_dataloader, eval_dataloader, tokenizer, config, compute_metrics, run_config).train()


__all__ = [
    "TrainingConfig", "Trainer", "TrainingDivergedError", "EvalLoss", "train", "resolve_mixed_precision",
    "distributed_state",
]
