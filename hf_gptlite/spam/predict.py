"""Classify messages with a saved GPTLite sequence classifier (e.g. the spam model from recipes/finetune_spam.py).

    gptlite-classify --model runs/spam "WINNER!! Claim your prize now" "See you at 6?"
    echo "Free entry in a weekly draw" | python -m hf_gptlite.spam.predict --model runs/spam

prints one `label<TAB>score<TAB>message` line per message (score = the predicted label's probability); exit
status 0, or 2 with one `error: ...` line for a missing/wrong model folder or no messages (--debug: traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..cli import one_line_errors, run_entry_point
from ..errors import InputValueError
from ..loading import ModelFolderError, check_model_dir

DEFAULT_MODEL_ENV = "GPTLITE_SPAM_MODEL"
TRAIN_HINT = "train a classifier with `python recipes/finetune_spam.py --output_dir DIR`"


def load_classifier(path: str | os.PathLike, device: str | int | None = None):
    """`pipeline("text-classification")` over a saved folder (local folders only; Hub ids go through pipeline)."""
    from transformers import pipeline

    import hf_gptlite  # noqa: F401  (registers the gptlite Auto classes)

    path = check_model_dir(path, hint=TRAIN_HINT)
    architectures = json.loads((path / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise InputValueError(f"{str(path)!r} holds a {', '.join(architectures) or 'model'}, not a sequence "
                              f"classifier; {TRAIN_HINT}")
    return pipeline("text-classification", model=str(path), device=device)


def classify(classifier, texts: list[str], batch_size: int = 16) -> list[dict]:
    """[{'label': 'spam', 'score': 0.98}, ...]: one dict per text, long texts truncated to the context length."""
    return classifier(list(texts), batch_size=batch_size, truncation=True)


def classify_messages(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="gptlite-classify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    one_line_errors(parser)
    parser.add_argument("messages", nargs="*", help="messages to classify (default: one per line on stdin)")
    parser.add_argument("--model", default=os.environ.get(DEFAULT_MODEL_ENV),
                        help=f"saved classifier folder (default: ${DEFAULT_MODEL_ENV})")
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args(argv)
    if not args.model:
        parser.error(f"no model: pass --model DIR or set {DEFAULT_MODEL_ENV}")
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    check_model_dir(args.model, hint=TRAIN_HINT)  # before waiting for messages on stdin
    messages = args.messages or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not messages:
        parser.error("no messages: give them as arguments or one per line on stdin")
    classifier = load_classifier(args.model)
    for text, pred in zip(messages, classify(classifier, messages, args.batch_size)):
        print(f"{pred['label']}\t{pred['score']:.4f}\t{text}")


def main(argv: list[str] | None = None) -> int:
    """The ``gptlite-classify`` console script; returns the exit status."""
    return run_entry_point(classify_messages, argv)


__all__ = ["DEFAULT_MODEL_ENV", "ModelFolderError", "classify", "load_classifier", "main"]


if __name__ == "__main__":
    sys.exit(main())
