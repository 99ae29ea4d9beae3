"""The spam classifier (the book's chapter 6), one folder from recipe to saved model:

    config.py   SpamConfig: every default of the job
    data.py     the SMS collection (or any labelled texts) -> balanced split on disk -> tokenized batches
    model.py    a pretrained GPTLite (or GPT-2) backbone + fresh head; which weights train (head ... lora)
    evaluate.py accuracy / precision / recall / F1 / confusion matrix
    run.py      the job: split -> model -> training.train -> saved folder -> test metrics
    predict.py  classify messages with a saved folder (gptlite-classify)
"""

from .config import SpamConfig
from .run import run_spam_finetune

__all__ = ["SpamConfig", "run_spam_finetune"]
