"""One optimizer update of the training loop: the accumulation, the token-weighted loss, the shared NaN decision.

    micro-batches (gradient_accumulation_steps per process)
      -> items: count label items, all-reduce (sum) across processes = N, the step's items
      -> forward + backward each micro-batch (gradient sync only on the last: ``accelerator.no_sync``), its loss
         SUM / N x num_processes (the data-parallel gradient average divides by num_processes again)
      -> loss of the step = mean over its N items, and "any process non-finite", in one all-reduce
      -> the global gradient norm (non-finite: stop), clip -> optimizer step -> zero_grad          (the scheduler steps in the loop)

A step never straddles a checkpoint: the loop saves between steps, when no gradient is pending.

The step's gradient is the gradient of the mean loss over every label item of all its micro-batches on all processes,
whatever the split of the data into micro-batches and processes: the same as transformers' Trainer with
``average_tokens_across_devices``. A model whose loss takes ``num_items_in_batch`` returns SUM / N itself; for
any other model (a plain per-batch mean) the loop weights each micro-batch's mean by its items: mean x n / N.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .batches import count_items, loss_shifts_labels, loss_takes_num_items


@dataclass
class StepResult:
    loss: float  # mean over the step's label items on all processes (nan/inf when some process saw one)
    finite: bool  # False when the loss of any process was not finite: every process gets the same answer
    num_items: int  # label items of the step, all processes
    num_tokens: int  # input tokens of the step, all processes (throughput)


class TrainStep:
    """The update of one step, on every process; see the module docstring."""

    def __init__(self, accelerator, model, optimizer, max_grad_norm: float):
        self.accelerator, self.model, self.optimizer = accelerator, model, optimizer
        self.max_grad_norm = max_grad_norm
        unwrapped = accelerator.unwrap_model(model)
        self.shifted = loss_shifts_labels(unwrapped)  # count labels[..., 1:] for a causal LM
        self.native = loss_takes_num_items(unwrapped)  # pass num_items_in_batch, or weight the mean here

    def forward_backward(self, micro_batches: list[dict]) -> StepResult:
        acc, model, P = self.accelerator, self.model, self.accelerator.num_processes
        counts = torch.stack([count_items(batch, self.shifted) for batch in micro_batches])
        total = acc.reduce(counts.sum(), "sum")  # N: the step's items on every process
        divisor = total.clamp(min=1)  # a step of no items (all labels -100) contributes a zero loss
        counts = counts.tolist()
        step_loss = torch.zeros((), dtype=torch.float64, device=acc.device)
        tokens = 0
        for i, batch in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            with contextlib.nullcontext() if last else acc.no_sync(model):
                loss = self._loss(batch, counts[i], divisor) * P
                acc.backward(loss)
            step_loss += loss.detach().double()
            tokens += batch["input_ids"].numel() if "input_ids" in batch else 0
        # one all-reduce: the step's loss (the per-process parts sum to P x mean), the non-finite processes, tokens
        local = torch.stack([step_loss, (~torch.isfinite(step_loss)).double(), step_loss.new_tensor(tokens)])
        loss_sum, nonfinite, all_tokens = acc.reduce(local, "sum").tolist()
        return StepResult(loss=loss_sum / P, finite=nonfinite == 0, num_items=int(total.item()),
                          num_tokens=int(all_tokens))

    def _loss(self, batch: dict, items: int, divisor: torch.Tensor) -> torch.Tensor:
        """This micro-batch's share of the step's mean loss (before the x num_processes)."""
        if self.native:
            return self.model(**batch, num_items_in_batch=divisor).loss  # SUM over its items / N
        out = self.model(**batch)
        if items == 0:  # a mean over no items is nan: a zero that keeps the graph (every process runs a backward)
            return out.logits.sum() * 0.0
        return out.loss * (items / divisor)

    def clip(self) -> float:
        """Clip to ``max_grad_norm`` (the norm of the whole gradient, across processes; <= 0: no clipping) and return
        the norm before clipping, the same on every process: inf/nan when any gradient is, with clipping off too (a
        NaN gradient can come with a finite loss), so the loop stops before the update. Off, the gradient is
        "clipped" to an infinite norm: multiplied by 1.0, unchanged bit for bit."""
        max_norm = self.max_grad_norm if self.max_grad_norm > 0 else float("inf")
        return float(self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm))

    def update(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def skipped(self) -> bool:
        """fp16: the loss scaler skipped the update (overflow); the schedule then does not advance either."""
        return bool(self.optimizer.step_was_skipped)


__all__ = ["StepResult", "TrainStep"]
