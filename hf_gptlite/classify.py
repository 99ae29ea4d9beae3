"""Classify messages with a saved GPTLite sequence classifier (e.g. the spam model from recipes/finetune_spam.py).

    gptlite-classify --model runs/spam "WINNER!! Claim your prize now" "See you at 6?"
    echo "Free entry in a weekly draw" | python -m hf_gptlite.classify --model runs/spam

prints one `label<TAB>score<TAB>message` line per message (score = the predicted label's probability).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_MODEL_ENV = "GPTLITE_SPAM_MODEL"


class ModelNotFoundError(FileNotFoundError):
    pass


def check_model_dir(path: str | os.PathLike) -> Path:
    """A clear error unless `path` is a saved classifier folder (config.json + weights + tokenizer)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"no classifier at {path}: expected a folder written by save_pretrained (config.json, "
            "model.safetensors, tokenizer files); train one with `python recipes/finetune_spam.py --output_dir DIR`"
        )
    return path


def load_classifier(path: str | os.PathLike, device: str | int | None = None):
    """`pipeline("text-classification")` over a saved folder (local folders only; Hub ids go through pipeline)."""
    from transformers import pipeline

    import hf_gptlite  # noqa: F401  (registers the gptlite Auto classes)

    path = check_model_dir(path)
    return pipeline("text-classification", model=str(path), device=device)


def classify(classifier, texts: list[str], batch_size: int = 16) -> list[dict]:
    """[{'label': 'spam', 'score': 0.98}, ...]: one dict per text, long texts truncated to the context length."""
    return classifier(list(texts), batch_size=batch_size, truncation=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("messages", nargs="*", help="messages to classify (default: one per line on stdin)")
    parser.add_argument("--model", default=os.environ.get(DEFAULT_MODEL_ENV),
                        help=f"saved classifier folder (default: ${DEFAULT_MODEL_ENV})")
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args(argv)
    if not args.model:
        parser.error(f"no model: pass --model DIR or set {DEFAULT_MODEL_ENV}")
    messages = args.messages or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not messages:
        parser.error("no messages: give them as arguments or one per line on stdin")
    try:
        classifier = load_classifier(args.model)
    except ModelNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for text, pred in zip(messages, classify(classifier, messages, args.batch_size)):
        print(f"{pred['label']}\t{pred['score']:.4f}\t{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
