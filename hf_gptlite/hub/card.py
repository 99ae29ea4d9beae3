"""The model card of a run: a template from ``hub/cards/`` (package data) filled with the run's real config and
metrics; a metric the run did not measure is left out. ``push.py`` writes it into the upload folder."""

from __future__ import annotations

import math
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

MODEL_CARD_DIR = Path(__file__).resolve().parent / "cards"  # package data: a wheel install has them too
CARD_TEMPLATES = {
    "causal-lm": "causal_lm.md",
    "spam-classifier": "spam_classifier.md",
    "instruction": "instruction_model.md",
}
PIPELINE_TAGS = {"causal-lm": "text-generation", "spam-classifier": "text-classification", "instruction": "text-generation"}

# metrics.json key -> (model-index metric type, readable name). Other `eval_*` / `test_*` keys keep their name.
METRIC_NAMES = {
    "eval_loss": ("loss", "Validation loss"),
    "eval_perplexity": ("perplexity", "Validation perplexity"),
    "eval_bits_per_char": ("bits_per_character", "Validation bits per character"),
    "test_loss": ("loss", "Test loss"),
    "test_perplexity": ("perplexity", "Test perplexity"),
    "test_accuracy": ("accuracy", "Test accuracy"),
    "test_f1": ("f1", "Test F1"),
    "test_precision": ("precision", "Test precision"),
    "test_recall": ("recall", "Test recall"),
    "eval_accuracy": ("accuracy", "Validation accuracy"),
    "eval_f1": ("f1", "Validation F1"),
    "rouge_l": ("rougeL", "ROUGE-L"),
    "judge_score_mean": ("judge_score", "Mean judge score"),
}
TASKS = {
    "causal-lm": ("text-generation", "Text generation"),
    "spam-classifier": ("text-classification", "Spam classification"),
    "instruction": ("text-generation", "Instruction following"),
}


def card_kind(config, tokenizer) -> str:
    """spam classifier (sequence classification) / instruction model (has a chat template) / causal LM."""
    if any(a.endswith("ForSequenceClassification") for a in (config.architectures or [])):
        return "spam-classifier"
    if getattr(tokenizer, "chat_template", None):
        return "instruction"
    return "causal-lm"


# ------------------------------------------------------------------------------------------ model card
def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def measured_metrics(metrics: dict) -> list[tuple[str, str, str, str, float]]:
    """(key, metric type, readable name, split, value) for each evaluation metric in metrics.json.

    Evaluation metrics are the known task metrics and any other numeric ``eval_*`` / ``test_*`` key;
    training figures (runtime, tokens/s ...) are not evaluation results.
    """
    rows = []
    for key, value in metrics.items():
        if not _is_number(value):
            continue
        if key in METRIC_NAMES:
            metric_type, metric_name = METRIC_NAMES[key]
        elif key.startswith(("eval_", "test_")) and not key.endswith(("runtime", "per_second")):
            metric_type, metric_name = key.split("_", 1)[1], key
        else:
            continue
        rows.append((key, metric_type, metric_name, "test" if key.startswith("test_") else "validation", value))
    return rows


def eval_results(metrics: dict, kind: str, dataset_type: str, dataset_name: str) -> list[EvalResult]:
    """One model-index EvalResult per measured evaluation metric; nothing for metrics the run did not write."""
    task_type, task_name = TASKS[kind]
    return [
        EvalResult(task_type=task_type, task_name=task_name, dataset_type=dataset_type, dataset_name=dataset_name,
                   dataset_split=split, metric_type=metric_type, metric_name=metric_name, metric_value=value)
        for _, metric_type, metric_name, split, value in measured_metrics(metrics)
    ]


def _data_settings(training_config: dict) -> dict:
    """Entries of training_config.json that describe the data (dataset names, files, splits)."""
    words = ("data", "corpus", "file", "split", "text_column", "label")
    return {k: v for k, v in training_config.items() if any(w in k.lower() for w in words) and "token" not in k.lower()}


def _scalar_settings(training_config: dict) -> dict:
    """Flat, printable training settings; never anything that looks like a credential."""
    return {
        k: v for k, v in training_config.items()
        if isinstance(v, (str, int, float, bool)) and not any(s in k.lower() for s in ("hub_token", "hf_token", "api_key", "password"))
        and k.lower() != "token"
    }


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def build_model_card(
    kind: str,
    *,
    repo_id: str,
    config,
    num_parameters: int,
    metrics: dict,
    training_config: dict,
    files: list[str],
    license: str = "apache-2.0",
    language: list[str] | None = None,
    datasets: list[str] | None = None,
    template_dir: str | Path | None = None,
) -> ModelCard:
    """Fill hub/cards/<template> from the run's real config and metrics (missing metrics stay out)."""
    template = Path(template_dir or MODEL_CARD_DIR) / CARD_TEMPLATES[kind]
    if not template.is_file():
        raise FileNotFoundError(f"model card template {str(template)!r} not found (pass template_dir=...)")
    language = language or training_config.get("language")
    if isinstance(language, str):
        language = [language]
    if not datasets:
        named = training_config.get("datasets") or training_config.get("dataset_name")
        datasets = [named] if isinstance(named, str) else named
    model_name = repo_id.split("/")[-1]
    dataset_name = (datasets or [None])[0] or training_config.get("dataset") or {
        "causal-lm": "held-out text", "spam-classifier": "SMS Spam Collection", "instruction": "instruction data"}[kind]
    results = eval_results(metrics, kind, dataset_type=str(dataset_name), dataset_name=str(dataset_name))
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=PIPELINE_TAGS[kind],
        license=license,
        language=language or None,
        datasets=datasets or None,
        tags=["gptlite", "custom_code", "safetensors", "gpt2", kind],
        model_name=model_name,
        eval_results=results or None,
    )
    arch = {
        "Parameters": f"{num_parameters:,}",
        "Layers (num_hidden_layers)": config.num_hidden_layers,
        "Hidden size": config.hidden_size,
        "Attention heads": config.num_attention_heads,
        "Context length (max_position_embeddings)": config.max_position_embeddings,
        "Vocabulary size": config.vocab_size,
        "Weights dtype": str(getattr(config, "dtype", None) or "float32").replace("torch.", ""),
    }
    if kind == "spam-classifier":
        arch["Labels"] = ", ".join(f"{i}={n}" for i, n in sorted(config.id2label.items()))
    measured = measured_metrics(metrics)
    metric_rows = [(name, split, _fmt(value)) for _, _, name, split, value in measured]
    used = {key for key, *_ in measured}
    other_rows = [(k, _fmt(v)) for k, v in metrics.items() if _is_number(v) and k not in used]
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        repo_id=repo_id,
        model_name=model_name,
        architecture=[(k, _fmt(v)) for k, v in arch.items()],
        metric_rows=metric_rows,
        other_metric_rows=other_rows,
        data_rows=[(k, _fmt(v)) for k, v in _data_settings(training_config).items()],
        training_rows=[(k, _fmt(v)) for k, v in _scalar_settings(training_config).items()],
        files=files,
        has_loss_curve="loss_curve.png" in files,
    )
