"""The data as the training loop sees it: one continuing stream of micro-batches, and the label items a step's loss
is averaged over.

    MicroBatchStream(loader, accelerator)  epoch after epoch without a break: an epoch end never ends or splits a
                                           step; its position (epoch, batches into the epoch) is what a checkpoint
                                           stores, and a resumed stream skips to it
    take(loader, n)                        the first n batches of a loader, leaving accelerate's bookkeeping as a
                                           finished pass leaves it
    loss_shifts_labels(model)              a causal-LM loss predicts ``labels[..., 1:]``
    count_items(batch, shifted)            the label items a micro-batch's loss is a mean over (``labels != -100``)
    loss_takes_num_items(model)            the model's loss is a sum divided by ``num_items_in_batch``
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import math

import torch
from torch import nn


def _end_pass(loader) -> None:
    """accelerate's prepared loader registers itself as the active dataloader when a pass starts and deregisters only
    when the pass runs to its end: a pass left early (an evaluation capped at ``eval_max_batches``, a run that stops
    mid-epoch) would stay registered. Ending it twice is harmless."""
    end = getattr(loader, "end", None)
    if callable(end):
        end()


def take(loader, limit: int | None = None):
    """Yields the first ``limit`` batches of ``loader`` (all of them with ``None``)."""
    try:
        yield from itertools.islice(loader, limit)
    finally:
        _end_pass(loader)


class MicroBatchStream:
    """The training dataloader as an endless stream of micro-batches: pass after pass, ``set_epoch(epoch)`` before
    each (a seedable sampler reshuffles per epoch), the next pass's first batches completing a step the last pass
    began. ``epoch`` and ``batches_into_epoch`` count the batches handed out; a stream built with them (from a
    checkpoint) continues at that batch."""

    def __init__(self, loader, accelerator, epoch: int = 0, batches_into_epoch: int = 0):
        self.loader, self.accelerator = loader, accelerator
        self.epoch, self.batches_into_epoch = epoch, batches_into_epoch
        self._batches = None

    def __iter__(self):
        return self

    def __next__(self):
        if self._batches is None:
            self._batches = self._generate()
        return next(self._batches)

    def take(self, n: int) -> list:
        return [next(self) for _ in range(n)]

    def state(self) -> dict:
        return {"epoch": self.epoch, "batches_into_epoch": self.batches_into_epoch}

    def close(self) -> None:
        if self._batches is not None:
            self._batches.close()
            self._batches = None

    def _generate(self):
        while True:
            loader = self.loader
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(self.epoch)
            resumed = self.batches_into_epoch > 0
            if resumed:
                loader = self.accelerator.skip_first_batches(loader, self.batches_into_epoch)
                if hasattr(loader, "set_epoch"):  # accelerate < 1.15: its skipping loader starts at epoch 0 and would
                    loader.set_epoch(self.epoch)  # set that on the sampler or dataset when iterated
            batches = iter(loader)
            empty = True
            try:
                # A torch DataLoader draws its base seed from the global RNG when a pass starts. The uninterrupted run
                # drew it when this pass began, before the checkpoint saved the RNG states: a resumed pass must not
                # draw it again (dropout would then follow another random stream).
                with torch.random.fork_rng(devices=[]) if resumed else contextlib.nullcontext():
                    first = next(batches, _END)
                for batch in itertools.chain([first], batches) if first is not _END else ():
                    empty = False
                    self.batches_into_epoch += 1
                    yield batch
            finally:
                _end_pass(loader)
            if empty and self.batches_into_epoch == 0:
                raise ValueError("the training dataloader yields no batches (is the training data empty?)")
            self.epoch += 1
            self.batches_into_epoch = 0


_END = object()


def steps_per_epoch(num_batches: int, num_processes: int, gradient_accumulation_steps: int) -> float:
    """Optimizer steps in one pass over ``num_batches`` batches (a fraction: the stream goes on into the next pass):
    accelerate deals the batches to the processes, a step takes ``gradient_accumulation_steps`` on each."""
    return math.ceil(num_batches / num_processes) / gradient_accumulation_steps


def sized_length(obj) -> int | None:
    """``len(obj)`` (a loader's batches in one pass, a dataset's examples); None for streamed data (a DataLoader
    over an IterableDataset raises TypeError)."""
    try:
        return len(obj)
    except TypeError:
        return None


# ---- what a step's loss is a mean over -------------------------------------------------------------
def _base_model(model: nn.Module) -> nn.Module:
    return getattr(model, "get_base_model", lambda: model)()  # a PEFT model -> the model it wraps


def _loss_function(model: nn.Module):
    """The loss a transformers model computes with: its ``loss_function`` (by ``loss_type``, which transformers reads
    off the class name, falling back to the causal-LM loss when the name matches none); None for other modules."""
    return getattr(_base_model(model), "loss_function", None)


def loss_shifts_labels(model: nn.Module) -> bool:
    """True for causal-LM losses, which predict ``labels[:, 1:]`` from ``logits[:, :-1]``: decided from the loss the
    model computes with, as transformers' Trainer does (never from tensor shapes). Unlike the Trainer, which reads
    ``loss_type`` alone, a subclass whose name names no loss (``MyModel(GPTLiteForCausalLM)``) counts as what its
    ``loss_function`` falls back to: the causal-LM loss."""
    from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss

    base = _base_model(model)
    causal = (LOSS_MAPPING.get(getattr(base, "loss_type", None)) is ForCausalLMLoss  # the Trainer's rule: a model
              or _loss_function(base) is ForCausalLMLoss)  # may compute its "ForCausalLM" loss with its own code
    return causal and not getattr(getattr(base, "config", None), "is_encoder_decoder", False)


def loss_takes_num_items(model: nn.Module) -> bool:
    """True when the model's loss is the SUM over its label items divided by a ``num_items_in_batch`` keyword
    (transformers' convention, e.g. ``ForCausalLMLoss``). A model says so with transformers' ``accepts_loss_kwargs``
    attribute; otherwise its ``loss_function`` must take the argument. A model whose forward takes ``**kwargs`` but
    computes a plain mean itself (``GPTLiteForSequenceClassification``) answers False: its ``loss_function``
    (``ForSequenceClassificationLoss``) takes no ``num_items_in_batch``."""
    declared = getattr(_base_model(model), "accepts_loss_kwargs", None)
    if declared is not None:
        return bool(declared)
    loss_fn = _loss_function(model)
    return loss_fn is not None and "num_items_in_batch" in inspect.signature(loss_fn).parameters


def count_items(batch: dict, shifted: bool) -> torch.Tensor:
    """The label items the model's loss on ``batch`` is a mean over: labels other than -100 (``labels[..., 1:]`` for
    a causal LM). For a classifier: one per example (per label for multi-label)."""
    labels = batch.get("labels")
    if labels is None:
        raise ValueError("training batches must hold 'labels' (the loop weights each step's loss by its label items)")
    if shifted:
        labels = labels[..., 1:]
    return (labels != -100).sum()


__all__ = ["MicroBatchStream", "take", "steps_per_epoch", "sized_length", "loss_shifts_labels", "loss_takes_num_items", "count_items"]
