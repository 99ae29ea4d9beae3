"""Evaluation and samples of the training loop: the loss over every evaluated item, gathered across processes,
and a sampled continuation of a prompt. The task's own metrics come from its metric function (``compute_metrics``).

    evaluate_loss(model, accelerator, loader, max_batches)  -> EvalLoss (the mean over label tokens for a causal LM,
                                                               over examples otherwise; per-example sums gathered,
                                                               block-wise for a causal LM like training's loss)
    sample_text(model, tokenizer, accelerator, prompt, ...)  -> the prompt and its continuation
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .batches import _base_model, _loss_function, loss_shifts_labels, take


@dataclass
class EvalLoss:
    """What the loop measured at an evaluation, handed to the task's metric function."""

    loss: float | None  # mean over every evaluated item (label token, or example), all processes
    num_items: int  # items scored
    complete: bool  # True when every evaluation batch was seen (no ``eval_max_batches`` cap)


@contextlib.contextmanager
def rng_kept(device: torch.device):
    """Every random stream as it was on entry, on exit: python's, numpy's, torch's CPU and ``device``'s. A DataLoader
    draws its base seed from torch's when a pass starts, accelerate may synchronise generators across processes,
    sampling draws tokens: an evaluation or a sample in the middle of training must not move the stream dropout and
    the data order follow."""
    import numpy as np

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


@torch.no_grad()
def evaluate_loss(model, accelerator, loader, max_batches: int | None = None) -> EvalLoss:
    """The mean loss over every evaluated item of ``loader`` (its first ``max_batches`` batches), gathered across
    processes. An evaluation that scores nothing (no batches, every label -100) raises ``ValueError``: it has no
    loss, and 0 would read as perfect. ``model`` is the prepared model, in eval mode."""
    acc = accelerator
    measured = EvalLoss(None, 0, max_batches is None)
    unwrapped = acc.unwrap_model(model)
    shifted = loss_shifts_labels(unwrapped)
    total_loss = torch.zeros((), dtype=torch.float64, device=acc.device)
    total_count = torch.zeros((), dtype=torch.float64, device=acc.device)
    for batch in take(loader, max_batches):
        with acc.autocast():  # the run's precision, also after train() gave the model back unwrapped
            out = model(**batch)
        nats, count = loss_per_example(unwrapped, out, batch, shifted)
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


def loss_per_example(model, out, batch: dict, shifted: bool) -> tuple[torch.Tensor, torch.Tensor]:  # model: unwrapped
    """(summed loss, number of items) per example, (B,) each, so that the gathered mean does not depend on how the
    examples fall into batches and processes (``gather_for_metrics`` drops the duplicates accelerate pads an uneven
    last batch with, example by example).

    A causal LM: the model's own loss function (``loss_function``, the one training uses: GPTLite's is block-wise,
    no (N, V) fp32 copy) one example at a time, as a sum (``num_items_in_batch=1``). A classifier: the loss of
    transformers' ``ForSequenceClassificationLoss`` for the model's ``config.problem_type``, per example. Any
    other model: its batch mean, per example (exact only with even batches)."""
    labels = batch.get("labels")
    base = _base_model(model)
    n = next(iter(batch.values())).shape[0]
    if labels is not None and shifted:
        loss_fn = _loss_function(base)
        vocab = out.logits.shape[-1]
        nats = torch.stack([loss_fn(out.logits[i : i + 1], labels[i : i + 1], vocab_size=vocab, num_items_in_batch=1)
                            for i in range(n)])
        return nats.float(), (labels[:, 1:] != -100).sum(1)
    problem = getattr(getattr(base, "config", None), "problem_type", None)
    if labels is not None and problem == "single_label_classification":
        logits = out.logits.float().reshape(n, -1)
        return F.cross_entropy(logits, labels.reshape(n), ignore_index=-100, reduction="none"), labels.reshape(n) != -100
    if labels is not None and problem in ("multi_label_classification", "regression"):
        logits, targets = out.logits.float().reshape(n, -1), labels.float().reshape(n, -1)
        loss = F.binary_cross_entropy_with_logits if problem == "multi_label_classification" else F.mse_loss
        per_item = loss(logits, targets, reduction="none")
        return per_item.sum(1), torch.full((n,), per_item.shape[1], device=per_item.device)
    return out.loss.detach().float().expand(n), torch.ones(n, device=out.loss.device)


@torch.no_grad()
def sample_text(model, tokenizer, accelerator, prompt: str | None, seed: int, max_new_tokens: int) -> str | None:
    """The prompt and a continuation of it (top-k sampling with a fixed seed, every random stream kept so it does
    not change the training run); None without a prompt, a tokenizer or a ``generate``. ``model``: unwrapped."""
    if not prompt or tokenizer is None or not hasattr(model, "generate"):
        return None
    device, was_training = accelerator.device, model.training
    inputs = tokenizer(prompt, return_tensors="pt").to(device)
    model.eval()
    try:
        with rng_kept(device), accelerator.autocast():
            torch.manual_seed(seed)
            ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=True, top_k=50, temperature=0.8,
                                 pad_token_id=tokenizer.pad_token_id)
    finally:
        model.train(was_training)
    return tokenizer.decode(ids[0], skip_special_tokens=True)


__all__ = ["EvalLoss", "evaluate_loss", "loss_per_example", "rng_kept", "sample_text"]
