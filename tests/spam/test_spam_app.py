"""The Chainlit spam app answers a typed message in a real headless Chromium (Debian's `chromium` + Playwright).

The classifier here is a tiny untrained GPTLite saved with save_pretrained: the test checks the app's wiring
(start, load the folder, run the pipeline, show label + probability), not the model's accuracy.
"""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def tiny_classifier_dir(tmp_path_factory, byte_tokenizer):
    from hf_gptlite import GPTLiteConfig, GPTLiteForSequenceClassification

    config = GPTLiteConfig.from_preset("tiny", vocab_size=len(byte_tokenizer), num_labels=2,
                                       id2label={0: "ham", 1: "spam"}, label2id={"ham": 0, "spam": 1})
    model = GPTLiteForSequenceClassification(config)
    out = tmp_path_factory.mktemp("spam_model")
    model.save_pretrained(out)
    byte_tokenizer.save_pretrained(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chainlit exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"chainlit did not answer at {url} within {timeout:.0f}s")


@contextlib.contextmanager
def chainlit_app(model_dir: Path, workdir: Path):
    """Run `chainlit run recipes/spam_app.py` on a free 127.0.0.1 port; always stop it (whole process group)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "GPTLITE_SPAM_MODEL": str(model_dir),
           "CHAINLIT_APP_ROOT": str(workdir), "CHAINLIT_AUTH_SECRET": "test-secret-not-for-production",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log_path = workdir / "chainlit.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chainlit", "run", str(REPO / "recipes" / "spam_app.py"),
             "--headless", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            wait_for_http(f"http://127.0.0.1:{port}/", proc, timeout=120)
            yield f"http://127.0.0.1:{port}"
        except BaseException:
            log.flush()
            print("chainlit log:\n" + log_path.read_text()[-4000:])
            raise
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def ask(url: str, message: str, screenshot: Path) -> str:
    """Open the app in headless Chromium, type `message`, return the assistant's reply text."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 750})
            page.goto(url, timeout=60_000)
            box = page.locator("#chat-input")
            box.wait_for(timeout=60_000)
            # the greeting (or the missing-model message) arrives first
            page.get_by_text(re.compile(r"Spam classifier loaded|Model not found")).first.wait_for(timeout=60_000)
            replies = page.get_by_text(re.compile(r"P\(spam\) = |Model not found"))
            before = replies.count()
            box.click()
            box.fill(message)
            page.keyboard.press("Enter")
            deadline = time.monotonic() + 60
            while replies.count() <= before:  # wait for a new answer, not the greeting already shown
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no answer to {message!r} within 60 s")
                page.wait_for_timeout(250)
            reply = replies.last
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            return reply.inner_text()
        finally:
            browser.close()


needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"Debian's chromium is not installed ({CHROMIUM} missing): apt-get install -y chromium",
)


@needs_chromium
@pytest.mark.slow
def test_app_answers_a_message_in_chromium(tiny_classifier_dir, tmp_path):
    with chainlit_app(tiny_classifier_dir, tmp_path) as url:
        reply = ask(url, "WINNER!! You have won a 1000 prize. Call 09061701461 now", ARTIFACTS / "spam_app.png")
    assert re.search(r"\b(spam|ham)\b \(probability \d+\.\d%; P\(spam\) = [01]\.\d{3}\)", reply), reply
    assert (ARTIFACTS / "spam_app.png").stat().st_size > 10_000


@needs_chromium
@pytest.mark.slow
def test_app_says_when_the_model_is_missing(tmp_path):
    with chainlit_app(tmp_path / "no_such_model", tmp_path) as url:
        reply = ask(url, "hello", ARTIFACTS / "spam_app_missing_model.png")
    assert "Model not found" in reply and "no_such_model" in reply, reply
