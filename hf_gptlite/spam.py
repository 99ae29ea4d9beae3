"""Fine-tuning a pretrained GPTLite into a spam classifier: split -> tokenize -> ``training.train`` -> test.

``SpamConfig`` is the one home of the defaults (the book's chapter 6 on the project's own CPU model: the
balanced SMS split, every weight trained — the book trains only the last block of GPT-2 124M, which on the
small Portuguese-pretrained CPU model reached 77% validation accuracy against 97% for `all`). ``recipes/finetune_spam.py`` parses it and
``bench/spam.py`` calls ``run_spam_finetune`` with overrides. A run's folder ends up with::

    model.safetensors config.json (+ code files) tokenizer files   -> pipeline("text-classification", model=DIR)
    metrics.json  (eval_* on validation; test_accuracy, test_precision, test_recall, test_f1, ...)
    confusion_matrix.png  training_config.json  loss_curve.png  log.jsonl  split/ (unless split_dir is set)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .classification import (
    TRAINABLE_CHOICES,
    classification_dataloader,
    count_parameters,
    evaluate_classifier,
    load_classifier_from_lm,
    load_metric,
    merge_lora,
    plot_confusion_matrix,
    set_trainable,
    tokenize_split,
)
from .data.sms import LABELS, prepare_sms_splits
from .training import TrainingConfig, distributed_state, train


@dataclass
class SpamConfig(TrainingConfig):
    # ---- run
    output_dir: str = field(default="runs/spam", metadata={"help": "run folder (model, metrics, plots)"})
    num_epochs: float = field(default=3.0, metadata={"help": "passes over the training split"})
    per_device_batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 20
    logging_steps: int = 10
    eval_steps: int = field(default=0, metadata={"help": "validate every N steps (0: once per epoch)"})
    mixed_precision: str = "no"
    report_to: str = "none"
    # ---- model
    model_name_or_path: str = field(
        default="runs/pretrain_pt",
        metadata={"help": "causal-LM folder (GPTLite or GPT-2) or a GPT-2 Hub id; default: the pretraining job's"},
    )
    from_scratch: bool = field(default=False, metadata={"help": "same architecture + tokenizer, random weights"})
    trainable: str = field(
        default="all",
        metadata={"help": "head | last_block | all | lora (all: the small CPU model needs it; the book's GPT-2 "
                          "124M used last_block)"},
    )
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    max_length: int | None = field(default=None, metadata={"help": "truncate messages (None: the model's context)"})
    # ---- data
    dataset_name_or_path: str | None = field(
        default=None, metadata={"help": "Hub data set id or CSV/TSV/JSONL file (default: the shipped SMS collection)"}
    )
    text_column: str = "text"
    label_column: str = "label"
    balanced: bool = field(default=True, metadata={"help": "down-sample ham to the number of spam (the book)"})
    split_seed: int = field(default=123, metadata={"help": "seed of the balancing and the 70/10/20 split"})
    split_dir: str | None = field(
        default=None, metadata={"help": "where the split is written / reused (None: OUTPUT_DIR/split)"}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.trainable not in TRAINABLE_CHOICES:
            raise ValueError(f"trainable must be one of {TRAINABLE_CHOICES}, got {self.trainable!r}")


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def run_spam_finetune(cfg: SpamConfig) -> dict:
    """The whole job; returns the final metrics (also written to ``output_dir/metrics.json``)."""
    from accelerate.utils import set_seed

    state = distributed_state()
    out = Path(cfg.output_dir)
    # 1. the split, written once and shared by every run that names the same split_dir
    split_dir = Path(cfg.split_dir) if cfg.split_dir else out / "split"
    with state.main_process_first():
        splits = prepare_sms_splits(split_dir, cfg.dataset_name_or_path, cfg.balanced, cfg.split_seed,
                                    cfg.text_column, cfg.label_column)
    # 2. model with a fresh head, and the weights that train
    set_seed(cfg.seed)
    model, tokenizer = load_classifier_from_lm(cfg.model_name_or_path, LABELS, from_scratch=cfg.from_scratch)
    max_length = min(cfg.max_length or model.config.max_position_embeddings, model.config.max_position_embeddings)
    model = set_trainable(model, cfg.trainable, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    n_trainable, n_total = count_parameters(model)
    # 3. tokenized splits and loaders
    with state.main_process_first():
        tokenized = {name: tokenize_split(ds, tokenizer, max_length) for name, ds in splits.items()}
    eval_bs = cfg.per_device_eval_batch_size or cfg.per_device_batch_size
    train_loader = classification_dataloader(tokenized["train"], tokenizer, cfg.per_device_batch_size, True, cfg.seed)
    val_loader = classification_dataloader(tokenized["validation"], tokenizer, eval_bs, False)
    if state.is_main_process:
        print(f"spam fine-tune: {cfg.model_name_or_path}{' (random init)' if cfg.from_scratch else ''}, "
              f"trainable={cfg.trainable} ({n_trainable:,} of {n_total:,} parameters); split {split_dir}: "
              + ", ".join(f"{k} {v.num_rows}" for k, v in splits.items()), flush=True)
    # validation once per epoch unless eval_steps says otherwise
    if cfg.eval_steps == 0:
        per_epoch = math.ceil(len(train_loader) / state.num_processes) // cfg.gradient_accumulation_steps
        cfg = dataclasses.replace(cfg, eval_steps=max(1, per_epoch))
    metric = load_metric()
    prepared = {}

    def validation_metrics(unwrapped, accelerator) -> dict:
        if "val" not in prepared:  # shard the validation set across processes once
            prepared["val"] = accelerator.prepare(
                classification_dataloader(tokenized["validation"], tokenizer, eval_bs, False))
        scores = evaluate_classifier(unwrapped, prepared["val"], accelerator, metric)
        return {f"eval_{k}": v for k, v in scores.items() if k != "confusion_matrix"}

    # 4. train on the shared loop (it writes metrics.json, log, loss curve and the model folder)
    metrics = train(model, train_loader, val_loader, tokenizer, cfg, compute_metrics=validation_metrics,
                    run_config=dataclasses.asdict(cfg))
    if not state.is_main_process:
        return metrics
    # 5. LoRA: fold the adapters in so the folder is a plain classifier that pipeline() loads
    if cfg.trainable == "lora":
        merged = merge_lora(model)
        for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):  # PEFT's adapter files
            (out / name).unlink(missing_ok=True)
        merged.save_pretrained(out)
    # 6. test set, read back from the saved folder (so the numbers are those of what ships)
    from transformers import AutoModelForSequenceClassification

    import hf_gptlite  # noqa: F401

    saved = AutoModelForSequenceClassification.from_pretrained(out).eval()
    test_loader = classification_dataloader(tokenized["test"], tokenizer, eval_bs, False)
    test = evaluate_classifier(saved, test_loader, metric=metric)
    metrics.update({f"test_{k}": v for k, v in test.items()})
    metrics.update(test_num_examples=splits["test"].num_rows, trainable=cfg.trainable,
                   trainable_parameters=n_trainable, from_scratch=cfg.from_scratch,
                   model_name_or_path=str(cfg.model_name_or_path), split_dir=str(split_dir))
    _write_json(out / "metrics.json", metrics)
    plot_confusion_matrix(test["confusion_matrix"], list(LABELS), out / "confusion_matrix.png",
                          title=f"test: accuracy {test['accuracy']:.1%}, F1 {test['f1']:.3f}")
    print("test: " + ", ".join(f"{k}={v:.4f}" for k, v in test.items() if k != "confusion_matrix"), flush=True)
    return metrics


__all__ = ["SpamConfig", "run_spam_finetune"]
