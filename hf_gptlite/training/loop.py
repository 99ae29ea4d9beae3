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
  process then raises the same ``TrainingDivergedError`` before the update, no checkpoint of the bad weights), and so
  is a non-finite gradient norm (measured with clipping off too: a NaN gradient can come with a finite loss),
  "time is up" and the planned horizon come from the main process's clock (budget.py), capped by ``max_steps``.
* Checkpoints are written between steps (no pending gradients): a resumed run replays the interrupted step from its
  first micro-batch and ends with the weights of an uninterrupted run.
* Resume (``resume_from_checkpoint``; resume.py, docs/training_loop.md): the weights, optimizer moments, RNG states
  and the position in the data come from the checkpoint; the settings from THIS run. What fixes the examples each
  step sees must match the checkpoint (per-device batch size, accumulation, processes, seed, the data's length, the
  model's shape, ``layer_lr_decay``): else one error naming the setting and both values, before anything is written.
  A larger ``max_steps`` extends the run; a new ``learning_rate`` / ``warmup_steps`` / ``min_lr_ratio`` (and the
  other optimizer settings) take effect from the resume step: the update of step s+1 uses
  ``learning_rate * WarmupCosine(warmup_steps, total, min_lr_ratio)(s)`` with the new values, the schedule of a run
  planned with them from the start. A time budget counts the time the run already spent.
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
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import (
    DataLoaderConfiguration,
    DistributedType,
    GradientAccumulationPlugin,
    ProjectConfiguration,
    gather_object,
    parse_flag_from_env,
    set_seed,
)
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from ..errors import as_user_error
from .artifacts import LOG_FILE, plot_loss_curve, restore_forward, save_model_folder, write_metrics
from .batches import MicroBatchStream, sized_length, steps_per_epoch
from .budget import TimeBudget
from .checkpoints import (
    RUN_CONFIG,
    check_training_output,
    clear_run,
    list_checkpoints,
    model_summary,
    save_checkpoint,
)
from .config import (  # noqa: F401  (importable from here too)
    TRACKER_MODULES,
    TrainingConfig,
    check_report_to,
    destroy_process_group_at_exit,
    distributed_state,
    resolve_mixed_precision,
    tracker_names,
)
from .evaluation import EvalLoss, evaluate_loss, rng_kept, sample_text
from .logs import LossWindow, RunLog, tracker_list
from .optim import WarmupCosine, create_optimizer
from .resume import apply_settings, check_checkpoint, run_identity, settings_of
from .step import TrainStep


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the run stopped without writing a checkpoint of the bad weights."""


def _prepare_train_dataloader(acc: Accelerator, loader):
    """``acc.prepare(loader)``; but a dataset that each process already reads its own part of (``split_by_process``:
    a stream split by node) is neither sharded again nor dispatched from process 0: its batches are only placed on
    the device."""
    if acc.num_processes == 1 or not getattr(loader.dataset, "split_by_process", False):
        return acc.prepare(loader)
    from accelerate.data_loader import prepare_data_loader

    return prepare_data_loader(loader, acc.device, num_processes=1, process_index=0, put_on_device=True,
                               dispatch_batches=False, rng_types=None)


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
        destroy_process_group_at_exit()
        self.accelerator = Accelerator(
            mixed_precision=resolve_mixed_precision(c.mixed_precision),
            # the loop accumulates itself (step.py): accelerate must never step on its own at a dataloader's end
            gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=1, sync_with_dataloader=False),
            log_with=tracker_list(c.report_to),
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "tensorboard")
            ),
            step_scheduler_with_optimizer=False,  # we step it once per optimizer update, on every process count
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),  # order = f(seed, epoch)
        )
        acc = self.accelerator
        self.run_log = RunLog(acc, self.output_dir)  # log.jsonl, the trackers, the history
        if parse_flag_from_env("ACCELERATE_USE_FSDP") and acc.distributed_type != DistributedType.FSDP:
            self._print(f"warning: an FSDP launch config, but accelerate runs {acc.distributed_type.value} here "
                        "(accelerate 1.15 has no FSDP on CPU): every process holds the whole model")
        for name, loader in (("training", train_dataloader), ("evaluation", eval_dataloader)):
            if loader is not None and sized_length(loader) == 0:
                raise ValueError(f"the {name} dataloader yields no batches (is the {name} data empty?)"
                                 + (" Pass eval_dataloader=None to train without evaluation." if name[0] == "e" else ""))
        self.identity = run_identity(c, train_dataloader, acc.num_processes)  # what a resume must match
        optimizer = create_optimizer(model, c, acc.device)
        batches = sized_length(train_dataloader)  # in one pass, before accelerate deals them to the processes
        if c.max_steps > 0:
            total = c.max_steps
        elif batches is None:
            raise ValueError("the training data has no length (streaming): set max_steps")
        else:  # an epoch is a fraction of steps: the stream goes on into the next pass
            total = max(1, math.ceil(c.num_epochs * steps_per_epoch(batches, acc.num_processes,
                                                                    c.gradient_accumulation_steps)))
        self._planned_steps = total  # the cap of a time budget
        self.schedule = WarmupCosine(c.warmup_steps, total, c.min_lr_ratio)
        scheduler = LambdaLR(optimizer, self.schedule)
        self._handed_in, self._was_training = model, model.training  # given back as found (restore_forward)
        restore_forward(model)  # a wrapper an earlier prepare left (a Trainer built and never trained)
        self.model, self.optimizer, self.scheduler = acc.prepare(model, optimizer, scheduler)
        self.train_dataloader = _prepare_train_dataloader(acc, train_dataloader)
        self.eval_dataloader = acc.prepare(eval_dataloader) if eval_dataloader is not None else None
        self.stream = MicroBatchStream(self.train_dataloader, acc)  # its position is saved in checkpoints
        self.step = TrainStep(acc, self.model, self.optimizer, c.max_grad_norm)
        self.global_step = 0
        self.train_tokens = 0  # tokens seen by all processes
        self.train_seconds = 0.0  # time in forward/backward/step only
        self.run_seconds = 0.0  # wall time of the run up to the last step, over every resume (the time budget's)

    @property
    def total_steps(self) -> int:
        return self.schedule.total_steps

    @property
    def epoch(self) -> int:
        return self.stream.epoch

    # -- logging (logs.py)
    @property
    def history(self) -> list[dict]:
        """Every record logged so far (the lines of ``log.jsonl``)."""
        return self.run_log.history

    def _log(self, record: dict) -> None:
        self.run_log.log(self.global_step, record)

    def _print(self, text: str) -> None:
        self.run_log.print(text)

    # -- checkpoints
    def save_checkpoint(self) -> Path:
        acc = self.accelerator
        # every process's position in its data (a streamed corpus split over processes into parts of different
        # lengths: each crosses its epoch ends at its own steps); the main process's is also stored on its own
        positions = gather_object([self.stream.state()]) if acc.num_processes > 1 else [self.stream.state()]
        state = {
            "global_step": self.global_step, **self.stream.state(),  # between steps: no gradient is pending
            "process_positions": positions,
            "total_steps": self.total_steps, "train_tokens": self.train_tokens,
            "train_seconds": self.train_seconds, "run_seconds": self.run_seconds, **self.identity,
            **model_summary(acc.unwrap_model(self.model)),
        }
        return save_checkpoint(acc, self.output_dir, self.global_step, state, self.config.save_total_limit)

    def check_checkpoint(self, spec: str) -> tuple[Path, dict]:
        """(the checkpoint folder, its trainer state) of ``spec``, checked against this run (resume.py). Reads only."""
        return check_checkpoint(spec, self.output_dir, self.accelerator.unwrap_model(self.model), self.identity,
                                self._planned_steps)

    def load_checkpoint(self, spec: str) -> Path:
        """Continue from a checkpoint: its weights, optimizer moments, RNG states and position in the data, with THIS
        run's settings (resume.py: the new learning rate, warmup, horizon ... take effect from its step)."""
        acc = self.accelerator
        path, state = self.check_checkpoint(spec)
        settings, schedule_state = settings_of(self.optimizer), dict(vars(self.schedule))
        acc.load_state(str(path))  # also restores the checkpoint's optimizer settings and schedule: replaced below
        self.global_step = step = state["global_step"]
        if (self.config.max_train_minutes or 0) > 0 and state["total_steps"] > step:  # the budget's last plan
            schedule_state["total_steps"] = min(state["total_steps"], self._planned_steps)
        apply_settings(self.optimizer, self.scheduler.scheduler, settings, schedule_state, step)
        self.stream.close()
        positions = state.get("process_positions") or []  # absent from checkpoints older than it
        mine = positions[acc.process_index] if len(positions) == acc.num_processes else state
        self.stream = MicroBatchStream(self.train_dataloader, acc, mine["epoch"], mine["batches_into_epoch"])
        self.train_tokens = state["train_tokens"]
        self.train_seconds = state["train_seconds"]
        self.run_seconds = state.get("run_seconds", state["train_seconds"])
        self.run_log.keep_until(self.global_step)
        self._print(f"resumed from {path} at step {self.global_step} of {self.total_steps}")
        return path

    # -- evaluation and samples (evaluation.py)
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
        try:
            with rng_kept(acc.device), torch.no_grad():  # training goes on with the random streams it had
                if self.eval_dataloader is not None:
                    measured = evaluate_loss(model, acc, self.eval_dataloader, max_batches)
                    metrics["eval_loss"] = measured.loss
                if self.compute_metrics is not None:
                    metrics.update(self.compute_metrics(acc.unwrap_model(model), acc, measured))
        finally:
            model.train()
        return metrics

    def sample(self, prompt: str | None = None) -> str | None:
        """Generate a continuation of ``prompt`` (top-k sampling with a fixed seed, on a forked RNG so it
        does not change the training run)."""
        prompt = prompt if prompt is not None else self.config.sample_prompt
        return sample_text(self.accelerator.unwrap_model(self.model), self.tokenizer, self.accelerator, prompt,
                           self.config.seed, self.config.sample_max_new_tokens)

    # -- training
    def train(self) -> dict[str, float]:
        """Run to the end (or the time budget); returns the final metrics. The model handed in comes back as it was
        handed in (no mixed-precision wrapper, its train/eval mode), also when the run raises."""
        try:
            return self._train()
        finally:
            restore_forward(self._handed_in)
            self._handed_in.train(self._was_training)

    def _train(self) -> dict[str, float]:
        c, acc = self.config, self.accelerator
        # every check before anything is written: the folder, the resume contract, a run already in the folder
        check_training_output(c)
        if c.resume_from_checkpoint:
            with as_user_error(ValueError, FileNotFoundError, context="--resume_from_checkpoint"):
                self.check_checkpoint(c.resume_from_checkpoint)
        acc.wait_for_everyone()  # every process checked the folder before the main one clears it
        if acc.is_main_process:
            if not c.resume_from_checkpoint and c.overwrite_output_dir and (removed := clear_run(self.output_dir)):
                self._print(f"overwrite_output_dir: removed the old run's {', '.join(removed)} from {self.output_dir}")
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / RUN_CONFIG).write_text(json.dumps(self.run_config, indent=2, default=str))
        acc.wait_for_everyone()
        if c.resume_from_checkpoint:
            self.load_checkpoint(c.resume_from_checkpoint)
        else:
            self.run_log.start_fresh()  # a fresh run starts a fresh log
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
            budget.start(self.global_step, spent=self.run_seconds)  # a resumed run counts the time already spent
        start, run_seconds_before = time.perf_counter(), self.run_seconds
        window = LossWindow()
        last_saved, grad_norm, time_up = None, None, False
        self.model.train()
        while self.global_step < self.total_steps:
            t0 = time.perf_counter()
            result = self.step.forward_backward(self.stream.take(c.gradient_accumulation_steps))
            if not result.finite:  # decided across processes: every one raises here, before the update
                self._diverged(f"loss became {result.loss}", last_saved)
            grad_norm = self.step.clip()  # the same on every process; measured with clipping off too
            if not math.isfinite(grad_norm) and acc.mixed_precision != "fp16":  # fp16: the scaler skips the update
                self._diverged(f"the gradient norm became {grad_norm}", last_saved)
            self.step.update()
            self.global_step += 1
            if budget is not None:  # the plan of the main process, shared; it sets the LR of the next steps
                self.schedule.total_steps, time_up = budget.update(self.global_step)
            if not self.step.skipped:  # fp16 overflow skips the update and the schedule
                self.scheduler.step()
            dt = time.perf_counter() - t0
            window.add(result.loss, result.num_tokens, dt)
            self.train_tokens += result.num_tokens
            self.train_seconds += dt
            self.run_seconds = run_seconds_before + time.perf_counter() - start
            bar.total = self.total_steps
            bar.update(1)
            final = time_up or self.global_step >= self.total_steps

            if self.global_step % c.logging_steps == 0 or final:
                record = {**window.record(), "learning_rate": self.scheduler.get_last_lr()[0], "epoch": self.epoch,
                          "elapsed_s": time.perf_counter() - start}
                record["grad_norm"] = grad_norm
                self._log(record)
                bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['learning_rate']:.2e}",
                                tok_s=f"{record['tokens_per_s']:.0f}")
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
        metrics.update(self.run_log.summary(self.global_step, wall_seconds, self.train_tokens, self.train_seconds,
                                            acc.unwrap_model(self.model)))
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
    "steps_per_epoch", "TrainingConfig", "Trainer", "TrainingDivergedError", "EvalLoss", "train", "resolve_mixed_precision",
    "distributed_state",
]
