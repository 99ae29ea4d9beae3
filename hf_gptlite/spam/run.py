"""Fine-tuning a pretrained GPTLite into a spam classifier, the whole job in one place:

    config.py (SpamConfig) -> data.py (split, tokenize, batches) -> model.py (backbone + fresh head, trainable
    weights) -> training.train with the validation metrics (evaluate.py) -> OUTPUT_DIR -> test set scored on the
    saved folder -> metrics.json, confusion_matrix.png;  predict.py classifies with the folder (gptlite-classify)

A run's folder ends up with::

    model.safetensors config.json (+ code files) tokenizer files   -> pipeline("text-classification", model=DIR)
    metrics.json  (eval_* on validation; test_accuracy, test_precision, test_recall, test_f1, ...)
    confusion_matrix.png  training_config.json  loss_curve.png  log.jsonl  split/ (unless split_dir is set)
    lora_adapter/ (trainable=lora: the adapter; the folder itself holds the merged model)
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from ..errors import check_output_dir
from ..loading import PRETRAINED_HINT, check_model_source, check_resume_checkpoint
from ..training import check_training_output, distributed_state, train
from ..training.artifacts import write_metrics
from .adapt import ADAPT_DIR, adapt_language_model, lm_adapt_enabled
from .config import SpamConfig
from .data import LABELS, classification_dataloader, load_labelled_texts, prepare_sms_splits, tokenize_split
from .evaluate import evaluate_classifier, load_metric, plot_confusion_matrix
from .model import count_parameters, load_classifier_from_lm, set_trainable


def run_spam_finetune(cfg: SpamConfig) -> dict:
    """The whole job; returns the final metrics (also written to ``output_dir/metrics.json``).

    Every input (the model, the data, a checkpoint to resume) is checked before anything is written: the split
    is written only once the model has loaded, so a refused run leaves ``output_dir`` absent or as it was."""
    from accelerate.utils import set_seed

    state = distributed_state()
    out = Path(cfg.output_dir)
    split_dir = Path(cfg.split_dir) if cfg.split_dir else out / "split"
    # 1. checks that load nothing: the folders, the model's files, a data file that must be read anyway
    check_training_output(cfg)  # writable, and no other run in it unless resumed or overwritten
    check_output_dir(split_dir, "split folder")
    check_model_source(cfg.model_name_or_path, PRETRAINED_HINT)
    source = None  # a new split's data, read (and refused) now; an existing split is reused as it is
    if not (split_dir / "split_info.json").is_file():
        source = load_labelled_texts(cfg.dataset_name_or_path, cfg.text_column, cfg.label_column)
    # 2. optional LM adaptation on the training texts only (it reads the split, so the split is written first);
    #    then the model with a fresh head, and the weights that train
    splits = None
    model_source, from_scratch = cfg.model_name_or_path, cfg.from_scratch
    if lm_adapt_enabled(cfg):
        with state.main_process_first():
            splits = prepare_sms_splits(split_dir, cfg.dataset_name_or_path, cfg.balanced, cfg.split_seed,
                                        cfg.text_column, cfg.label_column, dataset=source)
        model_source = adapt_language_model(cfg, list(splits["train"]["text"]), out / ADAPT_DIR)
        from_scratch = False  # the adapted weights (random-init ablation: adapted from random weights)
    set_seed(cfg.seed)
    model, tokenizer = load_classifier_from_lm(model_source, LABELS, from_scratch=from_scratch, pooling=cfg.pooling)
    max_length = min(cfg.max_length or model.config.max_position_embeddings, model.config.max_position_embeddings)
    model = set_trainable(model, cfg.trainable, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    n_trainable, n_total = count_parameters(model)
    check_resume_checkpoint(cfg.resume_from_checkpoint, out, model)
    # 3. the split, written once and shared by every run that names the same split_dir
    if splits is None:
        with state.main_process_first():
            splits = prepare_sms_splits(split_dir, cfg.dataset_name_or_path, cfg.balanced, cfg.split_seed,
                                        cfg.text_column, cfg.label_column, dataset=source)
    # 4. tokenized splits and loaders
    with state.main_process_first():
        tokenized = {name: tokenize_split(ds, tokenizer, max_length) for name, ds in splits.items()}
    eval_bs = cfg.per_device_eval_batch_size or cfg.per_device_batch_size
    train_loader = classification_dataloader(tokenized["train"], tokenizer, cfg.per_device_batch_size, True, cfg.seed)
    val_loader = classification_dataloader(tokenized["validation"], tokenizer, eval_bs, False)
    if state.is_main_process:
        origin = f"{cfg.model_name_or_path}{' (random init)' if cfg.from_scratch else ''}" + (
            f" -> LM-adapted {source}" if source != cfg.model_name_or_path else "")
        print(f"spam fine-tune: {origin}, "
              f"trainable={cfg.trainable} ({n_trainable:,} of {n_total:,} parameters); split {split_dir}: "
              + ", ".join(f"{k} {v.num_rows}" for k, v in splits.items()), flush=True)
    # validation once per epoch unless eval_steps says otherwise
    if cfg.eval_steps == 0:
        per_epoch = math.ceil(len(train_loader) / state.num_processes) // cfg.gradient_accumulation_steps
        cfg = dataclasses.replace(cfg, eval_steps=max(1, per_epoch))
    metric = load_metric()
    prepared = {}

    def validation_metrics(unwrapped, accelerator, measured) -> dict:
        if "val" not in prepared:  # shard the validation set across processes once
            prepared["val"] = accelerator.prepare(
                classification_dataloader(tokenized["validation"], tokenizer, eval_bs, False))
        scores = evaluate_classifier(unwrapped, prepared["val"], accelerator, metric)
        return {f"eval_{k}": v for k, v in scores.items() if k != "confusion_matrix"}

    # 5. train on the shared loop (it writes metrics.json, log, loss curve and the model folder, LoRA merged)
    metrics = train(model, train_loader, val_loader, tokenizer, cfg, compute_metrics=validation_metrics,
                    run_config=dataclasses.asdict(cfg))
    if not state.is_main_process:
        return metrics
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
    write_metrics(out, metrics)
    plot_confusion_matrix(test["confusion_matrix"], list(LABELS), out / "confusion_matrix.png",
                          title=f"test: accuracy {test['accuracy']:.1%}, F1 {test['f1']:.3f}")
    print("test: " + ", ".join(f"{k}={v:.4f}" for k, v in test.items() if k != "confusion_matrix"), flush=True)
    return metrics


__all__ = ["SpamConfig", "run_spam_finetune"]
