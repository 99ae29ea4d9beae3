"""The LLM-judge client against a real OpenAI-compatible server: `transformers serve` on 127.0.0.1.

One server (``python -m hf_gptlite.serve``: transformers serve + the GPTLite classes) holds two tiny models:
a GPTLite model wired here to answer "42" to the judge prompts (a parseable score), and a random model
exported to plain GPT-2 (garbled replies).
"""

import copy
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import wait_for_health
from instruct_models import wired_forty_two

from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM
from hf_gptlite.instruct.data import set_chat_template
from hf_gptlite.instruct.judge import (
    JudgeClient,
    JudgeUnreachableError,
    judge_responses,
    parse_score,
    summarize_scores,
)

REPO = Path(__file__).resolve().parents[2]
RECORDS = [
    {"instruction": "Name a color.", "input": "", "output": "Blue."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Say hi.", "input": "", "output": "Hi!"},
]
RESPONSES = ["Red.", "6", "Hello"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("reply, score", [
    ("85", 85), (" 85\n", 85), ("Score: 85.", 85), ("85/100", 85), ("I'd give it 70 out of 100", 70),
    ("100", 100), ("0", 0), ("92.6", 93), ("", None), ("great answer", None), ("7 or 8", None),
    ("150", None), ("\n\n\n", None), (None, None),
])
def test_parse_score(reply, score):
    assert parse_score(reply) == score


def test_summarize_scores():
    s = summarize_scores([42, 95, None, 100, 3])
    assert s["judge_score_mean"] == 60 and s["judge_num_scored"] == 4 and s["judge_num_unparsed"] == 1
    assert s["judge_score_distribution"]["40-49"] == 1 and s["judge_score_distribution"]["90-100"] == 2
    assert s["judge_score_distribution"]["0-9"] == 1 and sum(s["judge_score_distribution"].values()) == 4
    assert summarize_scores([None])["judge_score_mean"] is None


@pytest.fixture(scope="module")
def server(byte_tokenizer, tmp_path_factory):
    tokenizer = set_chat_template(copy.deepcopy(byte_tokenizer))
    root = tmp_path_factory.mktemp("served")
    judge42 = root / "judge42"
    model = wired_forty_two(tokenizer)
    model.save_pretrained(judge42)
    tokenizer.save_pretrained(judge42)
    garbled = root / "garbled_gpt2"
    torch.manual_seed(1)
    GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny", vocab_size=len(tokenizer), max_position_embeddings=2048)
                       ).to_gpt2().save_pretrained(garbled)
    tokenizer.save_pretrained(garbled)

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    log = open(root / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "hf_gptlite.serve", "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_health(port, proc, 300, root / "serve.log")
        yield {"url": f"http://127.0.0.1:{port}/v1", "judge42": str(judge42), "garbled": str(garbled), "root": root}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_judge_scores_and_resumes_from_cache(server):
    judge = JudgeClient(url=server["url"], model=server["judge42"], max_tokens=8)
    cache = server["root"] / "cache42.jsonl"
    first = judge_responses(RECORDS[:2], RESPONSES[:2], judge, cache_path=cache, show_progress=False)
    assert first["scores"] == [42, 42]
    summary = judge_responses(RECORDS, RESPONSES, judge, cache_path=cache, show_progress=False)
    assert summary["scores"] == [42, 42, 42]
    assert summary["judge_score_mean"] == 42 and summary["judge_score_distribution"]["40-49"] == 3
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert len(rows) == 3 and all(r["score"] == 42 and r["asks"] == 1 for r in rows)  # the 3rd only was new
    # resuming needs no server: every entry is in the cache
    down = JudgeClient(url=f"http://127.0.0.1:{free_port()}/v1", model=server["judge42"], max_retries=0)
    assert judge_responses(RECORDS, RESPONSES, down, cache_path=cache, show_progress=False)["scores"] == [42] * 3


@pytest.mark.slow
def test_garbled_replies_are_recorded_unparsed(server):
    judge = JudgeClient(url=server["url"], model=server["garbled"], max_tokens=8)
    cache = server["root"] / "cache_garbled.jsonl"
    summary = judge_responses(RECORDS, RESPONSES, judge, cache_path=cache, show_progress=False)
    assert summary["scores"] == [None, None, None]
    assert summary["judge_num_unparsed"] == 3 and summary["judge_score_mean"] is None
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert all(r["asks"] == 2 and r["score"] is None and isinstance(r["reply"], str) for r in rows)
    assert all(parse_score(r["reply"]) is None for r in rows)  # the raw reply is kept, not a guess


def test_unreachable_judge_names_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    judge = JudgeClient(url=url, model="llama3", max_retries=2, backoff=0.01)
    start = time.time()
    with pytest.raises(JudgeUnreachableError, match=f"{url}/chat/completions.*after 3 attempts"):
        judge.score(RECORDS[0], RESPONSES[0])
    assert time.time() - start < 10
