"""Evaluate an instruction-tuned GPTLite on the test split: generated responses, ROUGE-L, optional LLM judge.

    python recipes/evaluate_instruct.py --model_name_or_path runs/instruct
    python recipes/evaluate_instruct.py --judge true                                   # Ollama on localhost
    python recipes/evaluate_instruct.py --judge true --judge_url http://HOST:8000/v1 --judge_model NAME

Writes ``test_responses.jsonl`` and merges ``rouge_l`` (and ``judge_score_mean`` + distribution) into the
model folder's ``metrics.json``. Every field of ``hf_gptlite.instruct.evaluate.EvaluateInstructConfig`` is a flag.
"""

import sys

from hf_gptlite.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("evaluate_instruct"))
