"""LLM-as-judge: score model responses 0-100 through any OpenAI-compatible chat endpoint (the book's chapter 7.8).

Works with Ollama (``http://localhost:11434/v1``, the default), ``transformers serve``, vLLM, llama.cpp's server,
or a hosted API (set ``api_key`` / ``$JUDGE_API_KEY``). Plain HTTP (``urllib``), no client package needed::

    judge = JudgeClient(url="http://localhost:11434/v1", model="llama3")
    summary = judge_responses(records, responses, judge, cache_path="runs/x/judge_cache.jsonl")
    summary["judge_score_mean"], summary["judge_score_distribution"]

Scores are parsed from the reply (one number from 0 to 100, optionally written "85/100", "Score: 85");
a reply with no number or several different ones is asked once more, then recorded as unparsed (``None``),
never guessed. Every scored entry is appended to a JSONL cache keyed by the entry, so an interrupted
evaluation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import ServerUnreachableError, UserError
from .data import format_input

logger = logging.getLogger(__name__)

JUDGE_PROMPT = (
    "Given the input `{input}` and correct output `{output}`, score the model response `{response}` "
    "on a scale from 0 to 100, where 100 is the best score. Respond with the integer number only."
)
REMINDER = "Respond with the integer number only, from 0 to 100."
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_OUT_OF_100 = re.compile(r"(\d+(?:\.\d+)?)\s*(?:/|out of)\s*100\b")


class JudgeUnreachableError(ServerUnreachableError):
    """The judge endpoint could not be reached (refused, DNS, timeout) after all retries (a user error: start
    the server or pass another ``--judge_url``)."""


class JudgeRequestError(UserError, RuntimeError):
    """The judge endpoint answered with an error that retrying will not fix (e.g. 404: unknown model; a user
    error: pass another ``--judge_model`` or ``--judge_url``)."""


def parse_score(reply: str | None) -> int | None:
    """The 0-100 score in ``reply``, or ``None`` when there is not exactly one (``"85"``, ``"Score: 85."``,
    ``"85/100"`` -> 85; ``"I think 7 or 8"``, ``"great"``, ``"150"`` -> None)."""
    if not reply:
        return None
    m = _OUT_OF_100.search(reply)
    numbers = {float(m.group(1))} if m else {float(x) for x in _NUMBER.findall(reply)}
    if len(numbers) != 1:
        return None
    value = numbers.pop()
    return round(value) if 0 <= value <= 100 else None


def entry_key(record: dict, response: str, judge_model: str) -> str:
    """A stable key for the cache: the entry, the response and the judge that scored it."""
    blob = json.dumps([record["instruction"], record.get("input", ""), record["output"], response, judge_model],
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


@dataclass
class JudgeClient:
    """A minimal OpenAI-compatible ``/chat/completions`` client with retries and exponential backoff."""

    url: str = "http://localhost:11434/v1"
    model: str = "llama3"
    api_key: str | None = field(default_factory=lambda: os.environ.get("JUDGE_API_KEY"))
    timeout: float = 120.0
    max_retries: int = 3  # extra attempts after a failed request (connection error, 5xx, 429)
    backoff: float = 1.0  # seconds before the first retry, doubled each time
    max_tokens: int = 16  # a score is a few tokens; a long essay is cut rather than waited for
    parse_retries: int = 1  # extra asks (with a reminder) when the reply holds no single score

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/") + "/chat/completions"

    def chat(self, messages: list[dict]) -> str:
        """POST the messages (temperature 0) and return the reply's text."""
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0.0,
                           "max_tokens": self.max_tokens, "stream": False}).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last_error: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                return payload["choices"][0]["message"].get("content") or ""
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:500]
                if e.code != 429 and e.code < 500:
                    raise JudgeRequestError(f"judge at {self.endpoint} answered HTTP {e.code} for model "
                                            f"{self.model!r}: {detail}") from e
                last_error = e
                if attempt < self.max_retries:  # the last failure is the error itself: no warning before it
                    logger.warning("judge HTTP %d (attempt %d/%d): %s", e.code, attempt + 1, self.max_retries + 1,
                                   detail)
            except (TimeoutError, urllib.error.URLError, ConnectionError) as e:
                last_error = e
                if attempt < self.max_retries:
                    logger.warning("judge at %s unreachable (attempt %d/%d): %s", self.endpoint, attempt + 1,
                                   self.max_retries + 1, e)
            except (KeyError, IndexError, TypeError, json.JSONDecodeError) as e:
                raise JudgeRequestError(f"judge at {self.endpoint} sent a reply that is not an OpenAI chat "
                                        f"completion: {e!r}") from e
        if isinstance(last_error, urllib.error.HTTPError):
            raise JudgeRequestError(f"judge at {self.endpoint} kept failing: HTTP {last_error.code}") from last_error
        raise JudgeUnreachableError(
            f"cannot reach the judge at {self.endpoint} ({last_error}) after {self.max_retries + 1} attempts; "
            f"start an OpenAI-compatible server there (e.g. `ollama serve` + `ollama pull {self.model}`) "
            f"or pass --judge_url"
        ) from last_error

    def score(self, record: dict, response: str) -> dict:
        """Ask for a score: ``{"score": int | None, "reply": str, "asks": int}``."""
        prompt = JUDGE_PROMPT.format(input=format_input(record), output=record["output"], response=response)
        messages = [{"role": "user", "content": prompt}]
        reply = ""
        for ask in range(self.parse_retries + 1):
            reply = self.chat(messages)
            score = parse_score(reply)
            if score is not None:
                return {"score": score, "reply": reply, "asks": ask + 1}
            messages = messages + [{"role": "assistant", "content": reply}, {"role": "user", "content": REMINDER}]
        return {"score": None, "reply": reply, "asks": self.parse_retries + 1}


def _read_cache(path: Path) -> dict[str, dict]:
    cache = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                cache[row["key"]] = row
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut by an interruption: that entry is scored again
    return cache


def summarize_scores(scores: Sequence[int | None]) -> dict:
    """Mean, median and a 10-point histogram (``"0-9"`` ... ``"90-100"``) of the parsed scores."""
    parsed = [s for s in scores if s is not None]
    bins = {f"{lo}-{lo + 9 if lo < 90 else 100}": 0 for lo in range(0, 100, 10)}
    for s in parsed:
        lo = min(s // 10 * 10, 90)
        bins[f"{lo}-{lo + 9 if lo < 90 else 100}"] += 1
    return {
        "judge_score_mean": statistics.fmean(parsed) if parsed else None,
        "judge_score_median": statistics.median(parsed) if parsed else None,
        "judge_num_scored": len(parsed),
        "judge_num_unparsed": len(scores) - len(parsed),
        "judge_score_distribution": bins,
    }


def judge_responses(records: Sequence[dict], responses: Sequence[str], judge: JudgeClient,
                    cache_path: str | os.PathLike | None = None, show_progress: bool = True) -> dict:
    """Score each (record, response) pair; returns :func:`summarize_scores` plus ``"scores"`` (per entry).

    With ``cache_path`` every result is appended to that JSONL file as soon as it arrives and reused on the
    next call. ``JudgeUnreachableError`` / ``JudgeRequestError`` propagate (what was scored stays cached).
    """
    if len(records) != len(responses):
        raise ValueError(f"{len(records)} records but {len(responses)} responses")
    cache = _read_cache(Path(cache_path)) if cache_path else {}
    if cache_path:
        Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
    scores: list[int | None] = []
    reused = 0
    with tqdm(total=len(records), desc=f"judging with {judge.model}", disable=not show_progress) as bar:
        for record, response in zip(records, responses):
            key = entry_key(record, response, judge.model)
            if key in cache:
                reused += 1
                result = cache[key]
            else:
                result = {"key": key, **judge.score(record, response), "instruction": record["instruction"]}
                if cache_path:
                    with open(cache_path, "a", encoding="utf-8") as f:
                        f.write(json.dumps(result, ensure_ascii=False) + "\n")
                cache[key] = result
            scores.append(result["score"])
            bar.update(1)
    if reused:
        logger.info("judge: %d of %d scores reused from %s", reused, len(records), cache_path)
    return {**summarize_scores(scores), "scores": scores}


__all__ = [
    "JUDGE_PROMPT",
    "JudgeClient",
    "JudgeRequestError",
    "JudgeUnreachableError",
    "entry_key",
    "judge_responses",
    "parse_score",
    "summarize_scores",
]
