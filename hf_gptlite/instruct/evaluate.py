"""Evaluating an instruction-tuned model: responses to the test split (reused on a rerun), ROUGE-L through the
shipped ``evaluate`` module, optionally an LLM judge; the scores are merged into the folder's metrics.json.

    model folder -> generate_test_responses -> test_responses.jsonl -> ROUGE-L [+ judge] -> metrics.json
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputValueError, check_output_dir
from ..loading import check_model_source, load_causal_lm
from ..training.artifacts import write_metrics
from .data import load_alpaca_records, split_records
from .generation import generate_test_responses, model_fingerprint, require_chat_template
from .judge import JudgeClient, JudgeRequestError, JudgeUnreachableError, judge_responses

ROUGE_METRIC_PATH = Path(__file__).resolve().parent.parent / "resources" / "metrics" / "rouge_l"
RESPONSES_FILE = "test_responses.jsonl"
JUDGE_CACHE_FILE = "judge_cache.jsonl"



def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-L F1 / precision / recall through ``evaluate`` (the metric ships with the package)."""
    import evaluate

    metric = evaluate.load(str(ROUGE_METRIC_PATH))
    return metric.compute(predictions=list(predictions), references=list(references))



@dataclass
class EvaluateInstructConfig:
    """``recipes/evaluate_instruct.py``: responses to the test split, ROUGE-L, and optionally an LLM judge."""

    model_name_or_path: str = field(default="runs/instruct", metadata={"help": "the fine-tuned model folder"})
    output_dir: str | None = field(default=None, metadata={"help": "where responses + metrics go (None: the model folder)"})
    data: str | None = field(default=None, metadata={"help": "JSON/JSONL file or Hub dataset id (None: the shipped set)"})
    data_split: str = field(default="train", metadata={"help": "the Hub split read before the 85/10/5 split"})
    split: str = field(default="test", metadata={"help": "test | validation | train (of the 85/10/5 split)"})
    max_records: int | None = field(default=None, metadata={"help": "evaluate only the first N records"})
    batch_size: int = 8
    max_new_tokens: int = 256
    do_sample: bool = field(default=False, metadata={"help": "sample instead of greedy decoding"})
    seed: int = 42
    judge: bool = field(default=False, metadata={"help": "also score the responses with an LLM judge"})
    judge_url: str = field(default="http://localhost:11434/v1", metadata={"help": "OpenAI-compatible base URL"})
    judge_model: str = field(default="llama3", metadata={"help": "the judge model's name on that server"})
    judge_timeout: float = 120.0
    judge_max_retries: int = 3

    def __post_init__(self):
        if self.split not in ("train", "test", "validation"):
            raise InputValueError(f"split must be train, test or validation, got {self.split!r}")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise InputValueError(f"batch_size and max_new_tokens must be >= 1, got {self.batch_size} and "
                                  f"{self.max_new_tokens}")
        if self.max_records is not None and self.max_records < 1:
            raise InputValueError(f"max_records must be >= 1 (or None), got {self.max_records}")
        if self.judge and not self.judge_url.startswith(("http://", "https://")):
            raise InputValueError(f"judge_url must be an http(s):// URL, got {self.judge_url!r}")
        if self.judge_max_retries < 0 or self.judge_timeout <= 0:
            raise InputValueError(f"judge_max_retries must be >= 0 and judge_timeout > 0, got "
                                  f"{self.judge_max_retries} and {self.judge_timeout}")


def run_evaluate_instruct(cfg: EvaluateInstructConfig) -> dict:
    """Generate, score, and merge the scores into ``metrics.json``; returns the new metrics.

    The model, the data and the output folder are checked before anything is written. The responses are written
    before any judge is called, so an unreachable judge (``JudgeUnreachableError``, whose message names the URL
    and the responses file) loses nothing: rerun and they are reused."""
    from transformers import set_seed

    from .chat import INSTRUCT_HINT

    set_seed(cfg.seed)
    check_model_source(cfg.model_name_or_path, INSTRUCT_HINT)
    out_dir = Path(cfg.output_dir or cfg.model_name_or_path)
    check_output_dir(out_dir)
    records = split_records(load_alpaca_records(cfg.data, cfg.data_split))[cfg.split][: cfg.max_records]
    if not records:
        raise InputValueError(f"the {cfg.split} split of {cfg.data or 'the shipped instructions'} is empty")
    require_chat_template(cfg.model_name_or_path)
    model, tokenizer = load_causal_lm(cfg.model_name_or_path)
    settings = {"model": model_fingerprint(cfg.model_name_or_path) if Path(cfg.model_name_or_path).is_dir()
                else cfg.model_name_or_path, "max_new_tokens": cfg.max_new_tokens, "do_sample": cfg.do_sample,
                "seed": cfg.seed}
    responses_path = out_dir / f"{cfg.split}_responses.jsonl" if cfg.split != "test" else out_dir / RESPONSES_FILE
    responses = generate_test_responses(model, tokenizer, records, responses_path, settings, cfg.batch_size,
                                        cfg.max_new_tokens, cfg.do_sample)
    prefix = "" if cfg.split == "test" else f"{cfg.split}_"
    scores = rouge_l(responses, [r["output"] for r in records])
    metrics = {f"{prefix}{k}": v for k, v in scores.items()}
    metrics[f"{prefix}num_evaluated"] = len(records)
    write_metrics(out_dir, metrics, merge=True)
    print(f"ROUGE-L on {len(records)} {cfg.split} records: {scores['rouge_l']:.4f}  (responses: {responses_path})")
    if cfg.judge:
        client = JudgeClient(url=cfg.judge_url, model=cfg.judge_model, timeout=cfg.judge_timeout,
                             max_retries=cfg.judge_max_retries)
        try:
            summary = judge_responses(records, responses, client, cache_path=out_dir / JUDGE_CACHE_FILE)
        except (JudgeUnreachableError, JudgeRequestError) as e:
            raise type(e)(f"{e}\nThe {len(responses)} generated responses are kept in {responses_path} "
                          f"(and ROUGE-L in {out_dir / 'metrics.json'}); rerun when the judge is up: they are "
                          f"reused, and so is every score already in {out_dir / JUDGE_CACHE_FILE}") from e
        judged = {f"{prefix}{k}": v for k, v in summary.items() if k != "scores"}
        metrics.update(judged)
        write_metrics(out_dir, judged, merge=True)
        print(f"judge {cfg.judge_model}: mean {summary['judge_score_mean']} over {summary['judge_num_scored']} "
              f"scored, {summary['judge_num_unparsed']} unparsed; distribution {summary['judge_score_distribution']}")
    return metrics


__all__ = ["EvaluateInstructConfig", "RESPONSES_FILE", "JUDGE_CACHE_FILE", "rouge_l", "run_evaluate_instruct"]
