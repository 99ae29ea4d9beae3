"""Sequence classification on top of a pretrained GPTLite (the book's chapter 6: spam / not spam).

    model, tokenizer = load_classifier_from_lm("runs/pretrain", labels=("ham", "spam"))   # fresh `score` head
    model = set_trainable(model, "last_block")          # head | last_block | all | lora
    metrics = evaluate_classifier(model, dataloader)    # accuracy, precision, recall, f1, confusion_matrix

The backbone comes from a GPTLite causal-LM folder (ours), or from GPT-2 weights (a transformers GPT-2 folder
or Hub id), converted on the fly with ``GPTLiteForCausalLM.from_gpt2``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

TRAINABLE_CHOICES = ("head", "last_block", "all", "lora")
LORA_TARGET_MODULES = ("c_attn", "c_proj", "c_fc")
METRIC_PATH = Path(__file__).resolve().parent / "resources" / "metrics" / "binary_classification"


def _label_maps(labels) -> dict:
    return dict(num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})


def load_tokenizer_for_classification(name_or_path: str | os.PathLike, max_length: int | None = None):
    """The checkpoint's tokenizer with a pad token (GPT-2's has none: its EOS is used, as transformers does)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer of {name_or_path} has neither a pad nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    if max_length is not None:
        tokenizer.model_max_length = max_length  # pipeline(truncation=True) cuts long messages here
    return tokenizer


def load_classifier_from_lm(
    name_or_path: str | os.PathLike,
    labels=("ham", "spam"),
    from_scratch: bool = False,
    **hub_kwargs,
):
    """(GPTLiteForSequenceClassification, tokenizer) from a causal-LM checkpoint, with a freshly initialised head.

    `name_or_path`: a GPTLite folder (save_pretrained of GPTLiteForCausalLM, or an earlier classifier whose head
    is replaced when the labels differ), or a GPT-2 folder / Hub id. `from_scratch=True` keeps only the
    architecture and tokenizer and initialises every weight randomly (the no-pretraining baseline).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    import hf_gptlite  # noqa: F401  (registers the Auto classes)

    from .modeling_gptlite import GPTLiteForCausalLM, GPTLiteForSequenceClassification

    source = str(name_or_path)
    if Path(source).exists() and not (Path(source) / "config.json").is_file():
        raise FileNotFoundError(f"{source} has no config.json: not a save_pretrained model folder")
    config = AutoConfig.from_pretrained(source, **hub_kwargs)
    if config.model_type == "gptlite":
        if from_scratch:
            config = type(config).from_dict({**config.to_dict(), **_label_maps(labels)})
            model = GPTLiteForSequenceClassification(config)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                source, **_label_maps(labels), ignore_mismatched_sizes=True, **hub_kwargs
            )
    elif config.model_type == "gpt2":
        lm = GPTLiteForCausalLM.from_gpt2(source, **hub_kwargs)
        lm_config = lm.config.to_dict()
        lm_config.pop("architectures", None)
        clf_config = type(lm.config).from_dict({**lm_config, **_label_maps(labels)})
        model = GPTLiteForSequenceClassification(clf_config)
        if not from_scratch:
            model.transformer.load_state_dict(lm.transformer.state_dict())
        del lm
    else:
        raise ValueError(f"{source}: model_type {config.model_type!r} is neither 'gptlite' nor 'gpt2'")
    tokenizer = load_tokenizer_for_classification(source, max_length=model.config.max_position_embeddings)
    model.config.pad_token_id = tokenizer.pad_token_id
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the model only {model.config.vocab_size}")
    return model, tokenizer


def set_trainable(model: nn.Module, mode: str, lora_r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.0):
    """Choose which weights train; returns the model (a PEFT model for `lora`).

    head: the `score` layer only; last_block: + the last transformer block and the final norm (the book's
    default); all: everything; lora: low-rank adapters on c_attn/c_proj/c_fc with the `score` head trained fully.
    """
    if mode not in TRAINABLE_CHOICES:
        raise ValueError(f"trainable must be one of {TRAINABLE_CHOICES}, got {mode!r}")
    if mode == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                          target_modules=list(LORA_TARGET_MODULES), modules_to_save=["score"])
        return get_peft_model(model, lora)
    model.requires_grad_(mode == "all")
    trainable = [model.score]
    if mode == "last_block":
        trainable += [model.transformer.h[-1], model.transformer.ln_f]
    for module in trainable:
        module.requires_grad_(True)
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def merge_lora(model: nn.Module) -> nn.Module:
    """A plain GPTLiteForSequenceClassification with the LoRA weights folded in (what pipeline() loads)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def tokenize_split(dataset, tokenizer, max_length: int | None = None):
    """`text` -> input_ids / attention_mask (truncated to the context length); keeps `label`."""
    max_length = max_length or tokenizer.model_max_length
    return dataset.map(lambda b: tokenizer(b["text"], truncation=True, max_length=max_length),
                       batched=True, remove_columns=["text"], desc="tokenize")


def classification_dataloader(tokenized, tokenizer, batch_size: int, shuffle: bool, seed: int = 0):
    """Batches padded to their longest message by transformers' DataCollatorWithPadding (`label` -> `labels`).

    No length grouping: in SMS spam the length predicts the label (spam is longer), so length-grouped batches are
    nearly one class each — tried here, it left a tiny model at chance (49.8%) where shuffled batches gave 95.7%.
    """
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding

    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(tokenized, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      collate_fn=DataCollatorWithPadding(tokenizer, return_tensors="pt"))


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


__all__ = [
    "LORA_TARGET_MODULES", "TRAINABLE_CHOICES", "classification_dataloader", "count_parameters",
    "evaluate_classifier", "load_classifier_from_lm", "load_metric", "load_tokenizer_for_classification",
    "merge_lora", "plot_confusion_matrix", "predict", "set_trainable", "tokenize_split",
]
