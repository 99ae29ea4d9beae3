"""What the training loop reports while it runs: ``log.jsonl`` (one JSON record per line, each with its step),
the trackers of ``report_to`` (accelerate's ``log``), the progress lines on the main process, and the window of
steps a logged ``loss`` / ``tokens_per_s`` is measured over.

    RunLog(accelerator, output_dir)   .log(step, record) -> history + log.jsonl + trackers; .print(text);
                                      .keep_until(step) (a resumed run drops what came after its checkpoint);
                                      .start_fresh() (a fresh run starts a fresh log)
    LossWindow                        the steps since the last log: mean loss, tokens per second
    tracker_list(report_to)           accelerate's ``log_with`` for a ``report_to`` value
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from tqdm.auto import tqdm

from .artifacts import LOG_FILE
from .config import tracker_names


def tracker_list(report_to: str) -> list[str] | None:
    """``auto``: the trackers of tensorboard / trackio that are installed; ``none``: no tracker; else the names."""
    names = tracker_names(report_to)
    if names in ([], ["none"]):
        return None
    if names == ["auto"]:
        return [t for t in ("tensorboard", "trackio") if importlib.util.find_spec(t)] or None
    return names


class RunLog:
    """The run's records: ``history`` (on every process), ``output_dir/log.jsonl`` (main process), the trackers."""

    def __init__(self, accelerator, output_dir: str | os.PathLike):
        self.accelerator, self.path = accelerator, Path(output_dir) / LOG_FILE
        self.history: list[dict] = []

    def log(self, step: int, record: dict) -> None:
        record = {"step": step, **record}
        self.history.append(record)
        if self.accelerator.is_main_process:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        values = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
        self.accelerator.log(values, step=step)

    def print(self, text: str) -> None:
        if self.accelerator.is_main_process:
            tqdm.write(text)

    def start_fresh(self) -> None:
        if self.accelerator.is_main_process and self.path.exists():
            self.path.unlink()

    def keep_until(self, step: int) -> None:
        """Keep the log of the run up to ``step`` (a checkpoint); drop what the interrupted run wrote after it."""
        if self.accelerator.is_main_process and self.path.exists():
            kept = [r for r in map(json.loads, self.path.read_text().splitlines()) if r.get("step", 0) <= step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
            self.history = kept


    def summary(self, step: int, wall_seconds: float, tokens: int, train_seconds: float, model) -> dict:
        """The run's figures for ``metrics.json``: the last logged loss, steps, time, tokens and throughput, the
        model's size, processes and precision."""
        losses = [r["loss"] for r in self.history if "loss" in r]
        acc = self.accelerator
        return {"train_loss": losses[-1] if losses else float("nan"), "global_step": step,
                "train_runtime_s": wall_seconds, "train_tokens": tokens,
                "tokens_per_s": tokens / max(train_seconds, 1e-9),
                "num_parameters": sum(p.numel() for p in model.parameters()),
                "num_processes": acc.num_processes, "mixed_precision": acc.mixed_precision}


class LossWindow:
    """The steps since the last log record: their losses, tokens and time in forward/backward/update."""

    def __init__(self):
        self.losses, self.tokens, self.seconds = [], 0, 0.0

    def add(self, loss: float, tokens: int, seconds: float) -> None:
        self.losses.append(loss)
        self.tokens += tokens
        self.seconds += seconds

    def record(self) -> dict:
        """``loss`` (the mean of the steps' losses) and ``tokens_per_s``; empties the window."""
        record = {"loss": sum(self.losses) / len(self.losses), "tokens_per_s": self.tokens / max(self.seconds, 1e-9)}
        self.__init__()
        return record


__all__ = ["tracker_list", "RunLog", "LossWindow"]
