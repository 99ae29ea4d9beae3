"""Evaluate an instruction-tuned GPTLite on the test split: generated responses, ROUGE-L, optional LLM judge.

    python recipes/evaluate_instruct.py --model_name_or_path runs/instruct
    python recipes/evaluate_instruct.py --judge true                                   # Ollama on localhost
    python recipes/evaluate_instruct.py --judge true --judge_url http://HOST:8000/v1 --judge_model NAME

Writes ``test_responses.jsonl`` and merges ``rouge_l`` (and ``judge_score_mean`` + distribution) into the
model folder's ``metrics.json``. Every field of ``hf_gptlite.instruct.EvaluateInstructConfig`` is a flag.
"""

import sys

from hf_gptlite.instruct import EvaluateInstructConfig, run_evaluate_instruct
from hf_gptlite.judge import JudgeRequestError, JudgeUnreachableError
from hf_gptlite.training import parse_config

if __name__ == "__main__":
    try:
        run_evaluate_instruct(parse_config(EvaluateInstructConfig))
    except (JudgeUnreachableError, JudgeRequestError) as e:
        sys.exit(f"error: {e}")
