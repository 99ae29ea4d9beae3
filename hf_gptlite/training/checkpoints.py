"""Checkpoints of the training loop: list, resolve, check, save (atomic), load.

A checkpoint is ``OUTPUT_DIR/checkpoints/step_N/``: ``accelerator.save_state`` (model, optimizer, scheduler, RNG
states, safetensors) plus ``trainer_state.json`` (step, epoch, position in the data, plan). It is written into
``.tmp-step_N`` by every process (each its RNG state; under FSDP each its shards), and the main process renames it
only after all have finished writing, so a kill at any moment leaves either the whole checkpoint or none. The loop
saves between two optimizer steps, when no accumulated gradient is pending: a checkpoint is a step boundary.

A run folder that already holds a run (its ``training_config.json``, log, metrics or checkpoints) takes a new run only
as a resume of that run, or with ``overwrite_output_dir``, which clears the old run's files first
(``check_run_folder`` / ``clear_run``): its checkpoints would otherwise sit beside the new run's, ``latest`` would
resolve to the old run's higher step and ``save_total_limit`` would prune the new run's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from torch import nn

from ..errors import OutputInTheWayError, check_output_dir
from .artifacts import LOG_FILE, LORA_ADAPTER_DIR, METRICS_FILE

CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE = "trainer_state.json"
RUN_CONFIG = "training_config.json"
RUN_MARKERS = (RUN_CONFIG, LOG_FILE, METRICS_FILE, CHECKPOINTS_DIR)  # a folder with one of these holds a run
# what clear_run removes: the markers, the loss curve and tracker logs, the old run's weights
RUN_FILES = (*RUN_MARKERS, "loss_curve.png", "tensorboard", LORA_ADAPTER_DIR, "model*.safetensors",
             "model.safetensors.index.json")


def run_in(output_dir: str | os.PathLike) -> list[str]:
    """The files of an earlier run in ``output_dir`` (``RUN_MARKERS`` present; an empty checkpoints/ is none)."""
    root = Path(output_dir)
    found = [name for name in RUN_MARKERS if (root / name).exists()]
    if CHECKPOINTS_DIR in found and not any((root / CHECKPOINTS_DIR).iterdir()):
        found.remove(CHECKPOINTS_DIR)
    return found


def check_run_folder(output_dir: str | os.PathLike, resume_from_checkpoint: str | None, overwrite: bool) -> None:
    """A fresh run (no ``resume_from_checkpoint``) into a folder that holds a run is refused unless ``overwrite``
    (``OutputInTheWayError``, one line with the three ways out). Reads only."""
    if resume_from_checkpoint or overwrite:
        return
    found = run_in(output_dir)
    if found:
        raise OutputInTheWayError(
            f"output folder {str(output_dir)!r} already holds a run ({', '.join(found)}); resume it with "
            "--resume_from_checkpoint latest, pick another --output_dir, or pass --overwrite_output_dir to clear the "
            "old run first"
        )


def check_training_output(config) -> None:
    """The output checks of a training run (a ``TrainingConfig``), before it writes anything: the folder can be
    written (``errors.check_output_dir``), and it holds no other run unless resumed or overwritten."""
    check_output_dir(config.output_dir)
    check_run_folder(config.output_dir, config.resume_from_checkpoint, config.overwrite_output_dir)


def clear_run(output_dir: str | os.PathLike) -> list[str]:
    """Remove the files of an earlier run from ``output_dir`` (``RUN_FILES``; anything else stays); returns their
    names. Main process only."""
    root, removed = Path(output_dir), []
    for pattern in RUN_FILES:
        for path in sorted(root.glob(pattern)):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            removed.append(path.name)
    return removed


def _checkpoint_step(path: Path) -> int | None:
    match = re.fullmatch(r"step_(\d+)", path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary ``.tmp-*`` folders are not listed)."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [(s, p) for p in root.iterdir() if (s := _checkpoint_step(p)) is not None and (p / TRAINER_STATE).is_file()]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(spec: str, output_dir: str | os.PathLike) -> Path:
    """``latest`` -> the newest complete checkpoint of ``output_dir``; otherwise a checkpoint folder."""
    if spec == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise FileNotFoundError(
                f"resume_from_checkpoint='latest' but {Path(output_dir) / CHECKPOINTS_DIR} holds no complete checkpoint"
            )
        return found[-1]
    path = Path(spec)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint folder {path} does not exist")
    if not (path / TRAINER_STATE).is_file():
        raise ValueError(f"{path} is not a training checkpoint (no {TRAINER_STATE}); pass a checkpoints/step_N folder")
    return path


def check_checkpoint_matches(path: Path, model: nn.Module) -> None:
    """Raise ``ValueError`` when the checkpoint's weights do not fit ``model`` (names or shapes)."""
    from safetensors import safe_open

    state = json.loads((path / TRAINER_STATE).read_text())
    files = sorted(path.glob("model*.safetensors"))
    if not files:
        return  # sharded / FSDP state: accelerate checks it on load
    with safe_open(str(files[0]), framework="pt") as f:
        saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    current = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(saved) - set(current))
    wrong = [f"{k}: checkpoint {saved[k]} vs model {current[k]}" for k in saved if k in current and saved[k] != current[k]]
    if missing or wrong:
        detail = "; ".join(wrong[:3] + [f"unexpected {k}" for k in missing[:3]])
        raise ValueError(
            f"checkpoint {path} was written by another model ({state.get('model_class', '?')}, "
            f"{state.get('model_summary', '')}) and does not fit this one: {detail}"
        )



def model_summary(model: nn.Module) -> dict:
    """What a checkpoint says of the model that wrote it (named in the error of a checkpoint that does not fit)."""
    cfg = getattr(model, "config", None)
    keys = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "max_position_embeddings")
    return {"model_class": type(model).__name__,
            "model_summary": {k: getattr(cfg, k) for k in keys if cfg is not None and hasattr(cfg, k)}}


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, trainer_state: dict,
                    save_total_limit: int) -> Path:
    """``accelerator.save_state`` into ``.tmp-step_N`` with ``trainer_state``, then one rename; keeps the last
    ``save_total_limit`` checkpoints. Called on every process."""
    acc = accelerator
    root = Path(output_dir) / CHECKPOINTS_DIR
    final = root / f"step_{step}"
    tmp = root / f".tmp-step_{step}"
    if acc.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp), safe_serialization=True)
    acc.wait_for_everyone()  # every rank has written its part (RNG states, shards) before the rename
    if acc.is_main_process:
        (tmp / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=2))
        if final.exists():  # the same step saved again (after a resume): swap it out
            old = root / f".old-step_{step}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        for stale in list_checkpoints(output_dir)[:-save_total_limit]:
            shutil.rmtree(stale, ignore_errors=True)
    acc.wait_for_everyone()
    return final


def load_checkpoint(accelerator, spec: str, output_dir: str | os.PathLike, model: nn.Module) -> tuple[Path, dict]:
    """Resolve ``spec``, check it fits ``model`` (the unwrapped model), ``accelerator.load_state`` it; returns
    (path, the saved trainer state)."""
    path = resolve_checkpoint(spec, output_dir)
    check_checkpoint_matches(path, model)
    state = json.loads((path / TRAINER_STATE).read_text())
    accelerator.load_state(str(path))
    return path, state


__all__ = ["CHECKPOINTS_DIR", "TRAINER_STATE", "RUN_CONFIG", "list_checkpoints", "resolve_checkpoint",
           "check_checkpoint_matches", "save_checkpoint", "load_checkpoint", "run_in", "check_run_folder",
           "check_training_output", "clear_run", "model_summary"]
