"""Instruction tuning (the book's chapter 7), one folder from recipe to saved model:

    data.py        Alpaca records, the 85/10/5 split, the chat template, the masked collate
    finetune.py    the fine-tuning job (training.train) -> model folder with the chat template
    generation.py  batched replies, streamed chat replies, the reusable test-responses file
    evaluate.py    the evaluation job: responses -> ROUGE-L [+ judge] -> metrics.json
    judge.py       an OpenAI-compatible LLM judge (retries, cache)
    chat.py        the terminal chat job
"""

from .chat import ChatConfig, run_chat
from .evaluate import EvaluateInstructConfig, run_evaluate_instruct
from .finetune import FinetuneInstructConfig, run_finetune_instruct

__all__ = ["ChatConfig", "EvaluateInstructConfig", "FinetuneInstructConfig", "run_chat", "run_evaluate_instruct",
           "run_finetune_instruct"]
