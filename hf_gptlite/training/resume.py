"""The resume contract: what a run resumed from a checkpoint may change, and what must match it.

Must match the checkpoint (else one ``error:`` line naming the setting and both values, before anything is
written): they fix which examples each step sees, or the optimizer's layout.

    per_device_batch_size, gradient_accumulation_steps, num_processes   the position in the data is saved in
                                                                        batches of this size, dealt to this many
                                                                        processes, this many per step
    seed, train_examples, train_batches                                 the data order (a function of the seed and
                                                                        the epoch) and the data itself (its length)
    layer_lr_decay                                                      the optimizer's parameter groups
    model shape                                                         checkpoints.check_checkpoint_matches

May change, taking effect from the resume step (the rest of the run is the run planned with the new settings):

    max_steps / num_epochs      the new total (never below the checkpoint's step); the cosine horizon moves to it
    learning_rate, warmup_steps,
    min_lr_ratio                the update of step s+1 uses learning_rate x WarmupCosine(warmup_steps, total,
                                min_lr_ratio)(s) with the NEW values: the schedule of a run planned with them from
                                the start, read from the resume step on (Adam's moments are kept)
    weight_decay, adam_beta1,
    adam_beta2, adam_epsilon    the optimizer's groups take the new values
    max_grad_norm, eval/save/logging/sample settings, report_to, mixed_precision: as set
    max_train_minutes           counts the time the run already spent (``run_seconds``, saved in each checkpoint)
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputValueError
from .batches import sized_length
from .checkpoints import TRAINER_STATE, check_checkpoint_matches, resolve_checkpoint

MUST_MATCH = ("per_device_batch_size", "gradient_accumulation_steps", "num_processes", "seed", "train_examples",
              "train_batches", "layer_lr_decay")
WHY = {
    "per_device_batch_size": "the position in the data is saved in batches of this size",
    "gradient_accumulation_steps": "a step is this many micro-batches",
    "num_processes": "the batches are dealt to this many processes",
    "seed": "the data order is drawn from it",
    "train_examples": "the training data is not the checkpoint's",
    "train_batches": "the training data is not the checkpoint's",
    "layer_lr_decay": "the optimizer's parameter groups depend on it",
}


def run_identity(config, train_dataloader, num_processes: int) -> dict:
    """What a resumed run must share with its checkpoint (``MUST_MATCH``), from the config and the training loader
    as handed to the loop (before ``accelerator.prepare``). None for what a streamed dataset cannot tell."""
    dataset = getattr(train_dataloader, "dataset", None)
    return {
        "per_device_batch_size": getattr(train_dataloader, "batch_size", None) or config.per_device_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "num_processes": num_processes,
        "seed": config.seed,
        "train_examples": sized_length(dataset) if dataset is not None else None,
        "train_batches": sized_length(train_dataloader),
        "layer_lr_decay": config.layer_lr_decay,
    }


def check_resume(path: Path, state: dict, identity: dict, planned_steps: int) -> None:
    """Raise ``InputValueError`` when the run resumed from ``path`` (its ``trainer_state.json`` is ``state``)
    differs from the checkpoint in a setting that must match, or plans fewer steps than it already ran. A key an
    older checkpoint did not save is not compared."""
    for key in MUST_MATCH:
        saved, now = state.get(key), identity.get(key)
        if saved is not None and now is not None and saved != now:
            raise InputValueError(
                f"--resume_from_checkpoint {path}: {key} was {saved} in the checkpoint and is {now} now ({WHY[key]}); "
                f"resume with {key}={saved}, or start a new run in another --output_dir"
            )
    if planned_steps < state["global_step"]:
        raise InputValueError(
            f"--resume_from_checkpoint {path}: the run is planned for {planned_steps} steps (max_steps / num_epochs) "
            f"but the checkpoint is at step {state['global_step']}; pass a larger --max_steps to extend the run"
        )


def check_checkpoint(spec: str, output_dir, model, identity: dict, planned_steps: int) -> tuple[Path, dict]:
    """Resolve ``spec`` (``latest`` or a folder) and check it against this run: the model's shape (``model``
    unwrapped), then the contract above. Returns (the checkpoint folder, its trainer state); reads only."""
    path = resolve_checkpoint(spec, output_dir)
    check_checkpoint_matches(path, model)
    state = json.loads((path / TRAINER_STATE).read_text())
    check_resume(path, state, identity, planned_steps)
    return path, state


def settings_of(optimizer) -> list[dict]:
    """The hyperparameters of each parameter group (everything but the parameters), as the config set them."""
    return [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]


def apply_settings(optimizer, scheduler, settings: list[dict], schedule_state: dict, step: int) -> None:
    """After ``accelerator.load_state``: give the optimizer groups and the LR schedule back the settings of THIS
    run (``load_state`` restores the checkpoint's: its learning rates, warmup, horizon, weight decay, betas) and set
    the learning rate of the next update from them. Adam's moments and the step counts stay the checkpoint's."""
    for lam in scheduler.lr_lambdas:
        lam.__dict__.update(schedule_state)
    for group, fresh in zip(optimizer.param_groups, settings, strict=True):
        group.update(fresh)
    scheduler.base_lrs = [fresh["initial_lr"] for fresh in settings]
    scheduler.last_epoch = step
    lrs = [base * lam(step) for base, lam in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)]
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = lrs


__all__ = ["MUST_MATCH", "run_identity", "check_resume", "check_checkpoint", "settings_of", "apply_settings"]
