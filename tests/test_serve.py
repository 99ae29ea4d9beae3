"""``python -m hf_gptlite.serve`` through the real ``transformers serve`` code path, whatever process layout the
installed transformers uses (5.24 loads the model in the server's process, 5.25 in a spawned one).

One server holds a tiny GPTLite folder wired to answer "42" (tests/instruct/instruct_models.py); each OpenAI
endpoint is asked streaming and not: ``/v1/chat/completions`` and ``/v1/completions``.
"""

import copy
import json
import os
import pickle
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import transformers
from conftest import REPO, wait_for_health

from hf_gptlite.instruct.data import set_chat_template

sys.path.insert(0, str(Path(__file__).parent / "instruct"))
from instruct_models import wired_forty_two  # noqa: E402

pytest.importorskip("fastapi", reason="transformers[serving] is not installed")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, timeout: float = 120) -> tuple[int, str]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def sse_events(text: str) -> list[dict]:
    """The JSON events of a server-sent event stream (``data: {...}`` lines, up to ``data: [DONE]``)."""
    events = []
    for line in text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            events.append(json.loads(line[len("data: "):]))
    return events


@pytest.fixture(scope="module")
def served(byte_tokenizer, tmp_path_factory):
    tokenizer = set_chat_template(copy.deepcopy(byte_tokenizer))
    root = tmp_path_factory.mktemp("serve")
    folder = root / "judge42"
    wired_forty_two(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    log_path = root / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "hf_gptlite.serve", str(folder), "--host", "127.0.0.1",
                                 "--port", str(port), "--device", "cpu"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
        try:
            wait_for_health(port, proc, 300, log_path)
            yield {"url": f"http://127.0.0.1:{port}/v1", "model": str(folder), "log": log_path,
                   "tokenizer": tokenizer}
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _explain(status: int, text: str, served: dict) -> str:
    return (f"HTTP {status}: {text[:500]}\n--- server log (transformers {transformers.__version__}) ---\n"
            + served["log"].read_text()[-3000:])


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_chat_completions(served, stream):
    status, text = post(f"{served['url']}/chat/completions", {
        "model": served["model"], "messages": [{"role": "user", "content": "Rate this answer."}],
        "max_tokens": 8, "stream": stream, "temperature": 0})
    assert status == 200, _explain(status, text, served)
    if stream:
        events = sse_events(text)
        assert events, text
        content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))
    else:
        content = json.loads(text)["choices"][0]["message"]["content"]
    assert content.strip() == "42", content


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_completions(served, stream):
    """A raw prompt ending with the chat template's generation prompt: the wired model answers "42" after it."""
    tokenizer = served["tokenizer"]
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], add_generation_prompt=True,
                                           tokenize=False)
    status, text = post(f"{served['url']}/completions", {
        "model": served["model"], "prompt": prompt, "max_tokens": 8, "stream": stream, "temperature": 0})
    assert status == 200, _explain(status, text, served)
    if stream:
        events = sse_events(text)
        content = "".join(e["choices"][0].get("text") or "" for e in events if e.get("choices"))
    else:
        content = json.loads(text)["choices"][0]["text"]
    assert content.strip() == "42", content


def test_the_loader_carries_the_registration_into_a_spawned_process():
    """What transformers >= 5.25 does with the server's loader: pickle it into a process started with ``spawn``
    that has never imported hf_gptlite. Unpickling there must make the GPTLite classes resolvable by name."""
    from hf_gptlite import serve

    if getattr(serve, "GPTLiteModelLoader", None) is None:
        pytest.skip(f"transformers {transformers.__version__} has no serving ModelLoader (loads in-process)")
    loader = serve.GPTLiteModelLoader(device="cpu")
    code = ("import pickle, sys, transformers; pickle.loads(sys.stdin.buffer.read()); "
            "from transformers.cli.serving import model_manager; "  # the module object serve's lookup uses
            "print(model_manager.transformers.GPTLiteForCausalLM.__module__, "
            "sys.modules['transformers'].GPTLiteForCausalLM.__module__)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(loader), capture_output=True, env=env,
                         cwd=REPO.parent, timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert out.stdout.decode().split() == ["hf_gptlite.modeling_gptlite"] * 2
