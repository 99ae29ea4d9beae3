"""Scores of a classifier: predictions over a dataloader (gathered across processes), accuracy / precision /
recall / F1 / confusion matrix through the shipped ``evaluate`` metric module, and the confusion-matrix plot."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

METRIC_PATH = Path(__file__).resolve().parent.parent / "resources" / "metrics" / "binary_classification"


def load_metric():
    """The shipped `evaluate` metric: accuracy, precision, recall, f1 (positive = label 1) + confusion matrix."""
    import evaluate

    return evaluate.load(str(METRIC_PATH))


@torch.no_grad()
def predict(model: nn.Module, dataloader, accelerator=None) -> tuple[list[int], list[int]]:
    """(predictions, references) over a dataloader; gathered across processes when `accelerator` is given."""
    was_training = model.training
    model.eval()
    preds, refs = [], []
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    for batch in dataloader:
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits  # (B, num_labels)
        p = logits.argmax(-1)
        if accelerator is not None:
            p, labels = accelerator.gather_for_metrics((p, labels))
        preds += p.tolist()
        refs += labels.tolist()
    model.train(was_training)
    return preds, refs


def evaluate_classifier(model: nn.Module, dataloader, accelerator=None, metric=None) -> dict:
    """accuracy / precision / recall / f1 / confusion_matrix of `model` on `dataloader` via `evaluate`."""
    preds, refs = predict(model, dataloader, accelerator)
    return (metric or load_metric()).compute(predictions=preds, references=refs)


def plot_confusion_matrix(matrix, labels, path: str | os.PathLike, title: str = "") -> Path:
    """Save a confusion-matrix PNG (rows: true label, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=120)
    ax.imshow(matrix, cmap="Blues")
    for i, row in enumerate(matrix):
        for j, n in enumerate(row):
            ax.text(j, i, str(n), ha="center", va="center",
                    color="white" if n > max(map(max, matrix)) / 2 else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


__all__ = ["METRIC_PATH", "evaluate_classifier", "load_metric", "plot_confusion_matrix", "predict"]
