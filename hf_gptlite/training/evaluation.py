"""Evaluation and samples of the training loop: the loss over every evaluated item, gathered across processes,
and a sampled continuation of a prompt. The task's own metrics come from its metric function (``compute_metrics``).

    evaluate_loss(model, accelerator, loader, max_batches)  -> EvalLoss (the mean over label tokens for a causal LM,
                                                               over examples otherwise)
    sample_text(model, tokenizer, accelerator, prompt, ...)  -> the prompt and its continuation
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .batches import loss_shifts_labels, take


@dataclass
class EvalLoss:
    """What the loop measured at an evaluation, handed to the task's metric function."""

    loss: float | None  # mean over every evaluated item (label token, or example), all processes
    num_items: int  # items scored
    complete: bool  # True when every evaluation batch was seen (no ``eval_max_batches`` cap)


@torch.no_grad()
def evaluate_loss(model, accelerator, loader, max_batches: int | None = None) -> EvalLoss:
    """The mean loss over every evaluated item of ``loader`` (its first ``max_batches`` batches), gathered across
    processes. An evaluation that scores nothing (no batches, every label -100) raises ``ValueError``: it has no
    loss, and 0 would read as perfect. ``model`` is the prepared model, in eval mode."""
    acc = accelerator
    measured = EvalLoss(None, 0, max_batches is None)
    shifted = loss_shifts_labels(acc.unwrap_model(model))
    total_loss = torch.zeros((), dtype=torch.float64, device=acc.device)
    total_count = torch.zeros((), dtype=torch.float64, device=acc.device)
    for batch in take(loader, max_batches):
        with acc.autocast():  # the run's precision, also after train() gave the model back unwrapped
            out = model(**batch)
        nats, count = loss_per_example(out, batch, shifted)
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
    return measured


def loss_per_example(out, batch: dict, shifted: bool) -> tuple[torch.Tensor, torch.Tensor]:
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
def sample_text(model, tokenizer, accelerator, prompt: str, seed: int, max_new_tokens: int) -> str:
    """A continuation of ``prompt`` (top-k sampling with a fixed seed, on a forked RNG so it does not change the
    training run). ``model`` is the unwrapped model, in eval mode."""
    device = accelerator.device
    inputs = tokenizer(prompt, return_tensors="pt").to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        with accelerator.autocast():
            ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=True, top_k=50, temperature=0.8,
                                 pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(ids[0], skip_special_tokens=True)


__all__ = ["EvalLoss", "evaluate_loss", "loss_per_example", "sample_text"]
