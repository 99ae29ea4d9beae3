"""A newcomer's first hour: every entry point answers --help and finishes a tiny run with exit status 0, and
every user mistake ends in exit status 2 with ONE `error: ...` line on stderr that names the bad value, no
traceback, and the output folder absent or as it was.

The runs go in-process through the same functions the console scripts and recipes call (``run_command``,
``main_job``, ``spam.predict.main``, ``serve.main``, ``cli.main``); a few real subprocesses check the
``python -m`` / console-script / recipe paths and their exit statuses end to end.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO, TINY_FLAGS, recipe_env, wait_for_health

from hf_gptlite import cli, serve
from hf_gptlite.cli import main_job, run_command
from hf_gptlite.spam import predict

# the tiny preset with room for an Alpaca prompt, fp32, no trackers
TINY = [*TINY_FLAGS, "--mixed_precision", "no", "--max_position_embeddings", "512"]
SMS_ROWS = [("spam", f"WINNER!! Claim your FREE prize {i} now, call 0800 {i}") for i in range(30)] + \
           [("ham", f"See you at {i} o'clock, bring the book {i}") for i in range(30)]
RECORDS = [{"instruction": f"Question number {i}?", "input": "" if i % 2 else f"context {i}", "output": f"Answer {i}."}
           for i in range(20)]


def call(fn: Callable, *args) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of an in-process entry point."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = fn(*args)
    return status, out.getvalue(), err.getvalue()


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot(path: Path):
    """Everything under ``path`` (None when absent), to compare a folder before and after a refused run."""
    if not path.exists():
        return None
    if path.is_file():
        return path.read_bytes()
    return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else "<dir>" for p in sorted(path.rglob("*"))}


@pytest.fixture(scope="module")
def w(corpus, tmp_path_factory):
    """The workspace: the successful runs every later run starts from, and the bad inputs of the mistakes."""
    root = tmp_path_factory.mktemp("entry_points")
    w = SimpleNamespace(root=root, corpus=corpus, runs={})
    # pretrain: the model folder the other tasks start from (with a checkpoint, for the resume mistake)
    w.lm = root / "lm"
    w.runs["pretrain"] = call(run_command, "pretrain", [
        "--output_dir", str(w.lm), "--train_files", *corpus["files"], "--tokenizer_name_or_path",
        corpus["tokenizer_dir"], "--max_steps", "3", "--save_steps", "3", *TINY])
    # the spam classifier, on 60 SMS rows
    w.sms = root / "sms.tsv"
    w.sms.write_text("".join(f"{label}\t{text}\n" for label, text in SMS_ROWS), encoding="utf-8")
    w.clf = root / "spam"
    w.runs["finetune_spam"] = call(run_command, "finetune_spam", [
        "--model_name_or_path", str(w.lm), "--dataset_name_or_path", str(w.sms), "--output_dir", str(w.clf),
        "--max_steps", "2", "--per_device_batch_size", "8", "--warmup_steps", "0", "--logging_steps", "1"])
    # the instruction model, on 20 records
    w.records = root / "records.json"
    w.records.write_text(json.dumps(RECORDS), encoding="utf-8")
    w.instruct = root / "instruct"
    w.runs["finetune_instruct"] = call(run_command, "finetune_instruct", [
        "--model_name_or_path", str(w.lm), "--data", str(w.records), "--output_dir", str(w.instruct),
        "--max_steps", "2", "--eval_steps", "0", "--warmup_steps", "0", "--logging_steps", "1",
        "--report_to", "none", "--mixed_precision", "no"])
    # bad inputs
    w.empty = root / "empty.txt"
    w.empty.write_text("\n \n", encoding="utf-8")
    w.latin1 = root / "latin1.txt"
    w.latin1.write_bytes("Capitu tinha olhos de cigana oblíqua".encode("latin-1"))
    w.bad_yaml = root / "bad.yaml"
    w.bad_yaml.write_text("max_steps: [3\nlearning_rate: 1e-3\n", encoding="utf-8")
    w.unknown_yaml = root / "unknown.yaml"
    w.unknown_yaml.write_text("max_stepz: 3\n", encoding="utf-8")
    w.bad_tsv = root / "bad.tsv"
    w.bad_tsv.write_text("spam\tWIN a prize\nham\tsee you\nthis row has no tab\n", encoding="utf-8")
    w.bad_json = root / "bad.json"
    w.bad_json.write_text('[{"instruction": "Say hi", "output": "hi"},\n {"instruction": "Say bye" "output": "bye"}]\n',
                          encoding="utf-8")
    w.not_a_model = root / "not_a_model"
    w.not_a_model.mkdir()
    (w.not_a_model / "notes.txt").write_text("no model here")
    w.full = root / "full_folder"
    w.full.mkdir()
    (w.full / "keep.txt").write_text("someone's file")
    w.a_file = root / "a_file"
    w.a_file.write_text("a file where a folder should go")
    return w


# ---- exit status 0: --help and one tiny run of every entry point ------------------------------------------
@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_help_exits_0(command):
    status, out, err = call(run_command, command, ["--help"])
    assert status == 0, err
    assert "--output_dir" in out or "--model_name_or_path" in out or "--model_dir" in out
    assert "--config" in out and not err


def test_other_entry_points_help_exits_0():
    for fn in (cli.main, main_job, predict.main, serve.main):
        status, out, err = call(fn, ["--help"])
        assert status == 0 and "usage" in out.lower(), (fn, out, err)
    assert "commands: main, pretrain" in call(cli.main, ["--help"])[1]


def test_pretrain_spam_and_instruct_runs_exit_0(w):
    for command, folder in (("pretrain", w.lm), ("finetune_spam", w.clf), ("finetune_instruct", w.instruct)):
        status, out, err = w.runs[command]
        assert status == 0, (command, err[-3000:])
        assert (folder / "model.safetensors").is_file() and (folder / "metrics.json").is_file(), command
    assert (w.lm / "checkpoints" / "step_3").is_dir()
    assert "test: accuracy=" in w.runs["finetune_spam"][1]
    assert "data: 17 train" in w.runs["finetune_instruct"][1]


def test_overwrite_output_dir_clears_the_old_run_first(w, tmp_path):
    """A fresh run into a copy of the pretraining run (3 steps, a checkpoint at step 3) with --overwrite_output_dir:
    the old run's checkpoints, log and metrics are gone before the new run writes (its `latest` would have been the
    old step 3), a file of the user's stays."""
    out = tmp_path / "again"
    shutil.copytree(w.lm, out)
    (out / "notes.txt").write_text("mine")
    status, _, err = call(run_command, "pretrain", _pre(w, out, "--overwrite_output_dir", "--save_steps", "1"))
    assert status == 0, err[-3000:]
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["step_1", "step_2"]
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()][-1] == 2
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 2
    assert (out / "notes.txt").read_text() == "mine"


def test_tokenizer_evaluate_chat_classify_push_runs_exit_0(w):
    tok = w.root / "tok"
    status, out, err = call(run_command, "train_tokenizer", ["--files", *w.corpus["files"], "--vocab_size", "270",
                                                             "--output_dir", str(tok)])
    assert status == 0 and f"saved a 270-token tokenizer to {tok}" in out, err
    ev = w.root / "eval"
    status, out, err = call(run_command, "evaluate_instruct", [
        "--model_name_or_path", str(w.instruct), "--data", str(w.records), "--output_dir", str(ev),
        "--max_new_tokens", "4", "--max_records", "1"])
    assert status == 0 and "ROUGE-L on 1 test records" in out, err
    assert len((ev / "test_responses.jsonl").read_text().splitlines()) == 1
    status, out, err = call(run_command, "chat", ["--model_name_or_path", str(w.instruct), "--message", "Hi?",
                                                  "--max_new_tokens", "3"])
    assert status == 0, err
    status, out, err = call(predict.main, ["--model", str(w.clf), "WINNER!! Claim your FREE prize", "See you at 6"])
    assert status == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and all(line.split("\t")[0] in ("ham", "spam") for line in lines)
    dry = w.root / "upload"
    status, out, err = call(run_command, "push_to_hub", ["--model_dir", str(w.lm), "--repo_id", "me/tiny",
                                                         "--dry_run", str(dry)])
    assert status == 0 and "dry run: wrote" in out, err
    assert (dry / "README.md").is_file() and (dry / "model.safetensors").is_file()


def _console_script(name: str) -> tuple[str, Callable]:
    """pyproject's ``module:function`` of a console script, and that function."""
    import importlib

    spec = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"][name]
    module, function = spec.split(":")
    return spec, getattr(importlib.import_module(module), function)


def test_console_scripts_return_their_exit_status(w, tmp_path):
    """pip's wrapper of a console script runs ``sys.exit(function())`` with the command line in ``sys.argv``: the
    function must return an int, 0 after a successful run (``gptlite-main`` once returned its metrics dict, which
    ``sys.exit`` turns into exit status 1)."""
    main_out = tmp_path / "main_run"
    runs = {
        "gptlite-main": ["--output_dir", str(main_out), "--train_files", *w.corpus["files"], "--vocab_size", "300",
                         "--max_steps", "2", "--eval_steps", "0", "--save_steps", "0", *TINY],
        "gptlite-classify": ["--model", str(w.clf), "Free entry now"],
    }
    outputs = {}
    for name, argv in runs.items():
        spec, function = _console_script(name)
        for args in (["--help"], argv):
            sys_argv, sys.argv = sys.argv, [name, *args]
            try:
                status, outputs[name], err = call(function)
            finally:
                sys.argv = sys_argv
            assert status == 0 and type(status) is int, (spec, args, err[-3000:])
    assert "sample from the saved model" in outputs["gptlite-main"]
    assert (main_out / "model.safetensors").is_file() and (main_out / "tokenizer" / "tokenizer.json").is_file()
    label, score, message = outputs["gptlite-classify"].strip().split("\t")
    assert label in ("ham", "spam") and 0.5 <= float(score) <= 1 and message == "Free entry now"


def test_real_processes_exit_0_and_2(w, tmp_path):
    """The ``python -m`` paths as processes, run side by side: ``python -m hf_gptlite.spam.predict`` (the module
    behind ``gptlite-classify``) reading stdin, ``python -m hf_gptlite`` with a mistake (the real stderr: exactly
    one line), and ``python -m hf_gptlite.serve`` (started, answering, stopped with Ctrl-C)."""
    env = {**recipe_env(), "HF_HUB_OFFLINE": "1"}
    port = closed_port()
    procs = {
        "python -m hf_gptlite.spam.predict": [sys.executable, "-m", "hf_gptlite.spam.predict", "--model", str(w.clf)],
        "python -m hf_gptlite (mistake)": [sys.executable, "-m", "hf_gptlite", "push_to_hub", "--model_dir",
                                           "/nonexistent", "--repo_id", "me/tiny", "--dry_run", str(tmp_path / "never")],
        "python -m hf_gptlite.serve": [sys.executable, "-m", "hf_gptlite.serve", "--host", "127.0.0.1",
                                       "--port", str(port), "--device", "cpu"],
    }
    running = {name: subprocess.Popen(cmd, env=env, cwd=tmp_path, text=True, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for name, cmd in procs.items()}
    try:
        running["python -m hf_gptlite.spam.predict"].stdin.write("Free entry in a weekly draw\n\nSee you at 6\n")
        for p in running.values():
            p.stdin.close()
        server = running["python -m hf_gptlite.serve"]
        wait_for_health(port, server, 180)
        server.send_signal(signal.SIGINT)  # Ctrl-C: the normal way to stop a server
        results = {name: (p.wait(timeout=240), p.stdout.read(), p.stderr.read()) for name, p in running.items()}
    finally:
        for p in running.values():
            if p.poll() is None:
                p.kill()
    for name in ("python -m hf_gptlite.spam.predict", "python -m hf_gptlite.serve"):
        status, out, err = results[name]
        assert status == 0, (name, err[-3000:])
    lines = results["python -m hf_gptlite.spam.predict"][1].splitlines()
    assert [line.split("\t")[2] for line in lines] == ["Free entry in a weekly draw", "See you at 6"]
    status, out, err = results["python -m hf_gptlite (mistake)"]
    assert status == 2 and err.splitlines() == [
        "error: model folder '/nonexistent' does not exist or is not a folder; pass the folder a training run "
        "wrote (e.g. runs/pretrain_pt)"], err
    assert not (tmp_path / "never").exists()


# ---- exit status 2: the mistakes ------------------------------------------------------------------------
ENTRY_POINTS = {
    "gptlite-main": main_job, "gptlite-classify": predict.main, "serve": serve.main, "python -m hf_gptlite": cli.main,
}


@dataclass
class Mistake:
    id: str
    entry: str  # a command of cli.COMMANDS, or a key of ENTRY_POINTS
    args: Callable[[SimpleNamespace], list[str]]
    names: Callable[[SimpleNamespace], str]  # what the error line must name (the bad value)
    out: Callable[[SimpleNamespace], Path] | None = None  # absent or unchanged afterwards
    env: Callable[[SimpleNamespace], dict] | None = None
    quiet: bool = True  # nothing but the error line on stderr


def _pre(w, out, *extra):
    """pretrain flags on the tiny corpus into ``out``."""
    return ["--output_dir", str(out), "--train_files", *w.corpus["files"], "--tokenizer_name_or_path",
            w.corpus["tokenizer_dir"], "--max_steps", "2", *TINY, *extra]


def _unwritable(w) -> Path:
    """An output folder under a folder this user cannot write: a folder without write permission, or (as root, whom
    permission bits do not stop) one under /sys, where nobody can create a file."""
    import tempfile

    locked = w.root / "locked"
    locked.mkdir(exist_ok=True)
    locked.chmod(0o555)
    for parent in (locked, Path("/sys")):
        try:
            tempfile.TemporaryFile(dir=parent).close()
        except OSError:
            return parent / "run"
    pytest.skip("no folder this user cannot write was found")


def _unreachable_hub(w):
    w.hub_url = f"http://127.0.0.1:{closed_port()}"
    return {"HF_ENDPOINT": w.hub_url, "HF_TOKEN": "hf_not_a_real_token"}


MISTAKES = [
    Mistake("fp8 mixed precision", "pretrain", lambda w: _pre(w, w.root / "m1", "--mixed_precision", "fp8"),
            lambda w: "got 'fp8'", lambda w: w.root / "m1"),
    Mistake("unknown tracker", "pretrain", lambda w: _pre(w, w.root / "m1t", "--report_to", "tensorbord"),
            lambda w: "report_to: unknown tracker 'tensorbord'", lambda w: w.root / "m1t"),
    Mistake("zero batch size", "pretrain", lambda w: _pre(w, w.root / "m2", "--per_device_batch_size", "0"),
            lambda w: "per_device_batch_size must be >= 1, got 0", lambda w: w.root / "m2"),
    Mistake("negative warmup steps", "finetune_spam",
            lambda w: ["--model_name_or_path", str(w.lm), "--output_dir", str(w.root / "m3"), "--warmup_steps", "-5"],
            lambda w: "warmup_steps must be >= 0, got -5", lambda w: w.root / "m3"),
    Mistake("missing train file", "pretrain", lambda w: _pre(w, w.root / "m4") + ["--train_files", "nope.txt"],
            lambda w: "text file not found: nope.txt", lambda w: w.root / "m4"),
    Mistake("empty train file", "pretrain", lambda w: _pre(w, w.root / "m5") + ["--train_files", str(w.empty)],
            lambda w: f"text file is empty: {w.empty}", lambda w: w.root / "m5"),
    Mistake("non-UTF-8 train file", "gptlite-main", lambda w: _pre(w, w.root / "m6") + ["--train_files", str(w.latin1)],
            lambda w: f"{w.latin1} is not valid UTF-8 (byte 32", lambda w: w.root / "m6"),
    Mistake("malformed YAML", "pretrain", lambda w: ["--config", str(w.bad_yaml), "--output_dir", str(w.root / "m7")],
            lambda w: f"config file {w.bad_yaml} is not valid YAML", lambda w: w.root / "m7"),
    Mistake("unknown YAML key", "finetune_instruct", lambda w: ["--config", str(w.unknown_yaml)],
            lambda w: "unknown config key 'max_stepz' (did you mean max_steps?)"),
    Mistake("missing --config file", "train_tokenizer",
            lambda w: ["--config", "no_such.yaml", "--output_dir", str(w.root / "m9")],
            lambda w: "config file 'no_such.yaml' not found", lambda w: w.root / "m9"),
    Mistake("flag of the wrong type", "pretrain", lambda w: _pre(w, w.root / "m10", "--max_steps", "ten"),
            lambda w: "invalid int value: 'ten'", lambda w: w.root / "m10"),
    Mistake("unknown flag", "evaluate_instruct", lambda w: ["--max_new_tokenz", "4"],
            lambda w: "unknown flag --max_new_tokenz (did you mean --max_new_tokens?)"),
    Mistake("unknown preset", "gptlite-main", lambda w: _pre(w, w.root / "m12", "--model_preset", "huge"),
            lambda w: "huge", lambda w: w.root / "m12"),
    Mistake("vocabulary too small", "train_tokenizer",
            lambda w: ["--files", *w.corpus["files"], "--vocab_size", "100", "--output_dir", str(w.root / "m13")],
            lambda w: "vocab_size=100 is too small", lambda w: w.root / "m13"),
    Mistake("tokenizer output is a file", "train_tokenizer",
            lambda w: ["--files", *w.corpus["files"], "--vocab_size", "270", "--output_dir", str(w.a_file)],
            lambda w: f"output folder {str(w.a_file)!r} is a file", lambda w: w.a_file),
    Mistake("fresh run into a folder that holds a run", "pretrain", lambda w: _pre(w, w.resume_copy),
            lambda w: f"output folder {str(w.resume_copy)!r} already holds a run", lambda w: w.resume_copy),
    Mistake("unwritable output folder", "pretrain", lambda w: _pre(w, _unwritable(w)),
            lambda w: f"output folder {str(_unwritable(w))!r} cannot be written", lambda w: _unwritable(w)),
    Mistake("zero block size", "pretrain", lambda w: _pre(w, w.root / "m_bs", "--block_size", "0"),
            lambda w: "block_size must be >= 1 (or unset: the model's context), got 0", lambda w: w.root / "m_bs"),
    Mistake("resume with another batch size", "pretrain",
            lambda w: _pre(w, w.resume_copy, "--resume_from_checkpoint", "latest", "--max_steps", "5",
                           "--per_device_batch_size", "4"),
            lambda w: "per_device_batch_size was 8 in the checkpoint and is 4 now", lambda w: w.resume_copy,
            quiet=False),  # checked by the loop, after the data was read (the data's length is part of the contract)
    Mistake("resume from a checkpoint of another shape", "pretrain",
            lambda w: _pre(w, w.resume_copy, "--hidden_size", "32", "--resume_from_checkpoint", "latest"),
            lambda w: "--resume_from_checkpoint: checkpoint", lambda w: w.resume_copy),
    Mistake("model path neither folder nor Hub id", "finetune_spam",
            lambda w: ["--model_name_or_path", "/nonexistent/model", "--dataset_name_or_path", str(w.sms),
                       "--output_dir", str(w.root / "m16")],
            lambda w: "model '/nonexistent/model' is neither an existing folder nor a valid Hub id",
            lambda w: w.root / "m16"),
    Mistake("model folder without a model", "finetune_spam",
            lambda w: ["--model_name_or_path", str(w.not_a_model), "--output_dir", str(w.root / "m17")],
            lambda w: f"no config.json in model folder {str(w.not_a_model)!r}", lambda w: w.root / "m17"),
    Mistake("malformed SMS TSV", "finetune_spam",
            lambda w: ["--model_name_or_path", str(w.lm), "--dataset_name_or_path", str(w.bad_tsv),
                       "--output_dir", str(w.root / "m18")],
            lambda w: f"{w.bad_tsv}:3: malformed row", lambda w: w.root / "m18"),
    Mistake("malformed instruction JSON", "finetune_instruct",
            lambda w: ["--model_name_or_path", str(w.lm), "--data", str(w.bad_json), "--output_dir", str(w.root / "m19")],
            lambda w: f"{w.bad_json}: not valid JSON", lambda w: w.root / "m19"),
    Mistake("Hub id while HF_ENDPOINT is unreachable", "finetune_instruct",
            lambda w: ["--model_name_or_path", "someone/some-model", "--output_dir", str(w.root / "m20")],
            lambda w: f"the Hub at {w.hub_url} (HF_ENDPOINT) that would serve it as a Hub id cannot be reached",
            lambda w: w.root / "m20", env=_unreachable_hub),
    Mistake("unreachable judge (responses kept)", "evaluate_instruct",
            lambda w: ["--model_name_or_path", str(w.instruct), "--data", str(w.records), "--output_dir",
                       str(w.root / "m21"), "--max_new_tokens", "3", "--max_records", "1", "--judge", "true",
                       "--judge_url", f"http://127.0.0.1:{closed_port()}/v1", "--judge_max_retries", "0"],
            lambda w: "cannot reach the judge at http://127.0.0.1:", quiet=False),
    Mistake("evaluate a model without a chat template", "evaluate_instruct",
            lambda w: ["--model_name_or_path", str(w.lm), "--data", str(w.records), "--output_dir", str(w.root / "m22")],
            lambda w: f"{w.lm} has no chat template", lambda w: w.root / "m22"),
    Mistake("chat with a missing model", "chat", lambda w: ["--model_name_or_path", "./runs/nope", "--message", "hi"],
            lambda w: "model './runs/nope' is neither an existing folder nor a valid Hub id"),
    Mistake("push a missing model folder", "push_to_hub",
            lambda w: ["--model_dir", "/nonexistent", "--repo_id", "me/tiny", "--dry_run", str(w.root / "m24")],
            lambda w: "model folder '/nonexistent' does not exist", lambda w: w.root / "m24"),
    Mistake("push to a bad repo id", "push_to_hub",
            lambda w: ["--model_dir", str(w.lm), "--repo_id", "me/not a name", "--dry_run", str(w.root / "m25")],
            lambda w: "invalid repo_id 'me/not a name'", lambda w: w.root / "m25"),
    Mistake("push dry run into a non-empty folder", "push_to_hub",
            lambda w: ["--model_dir", str(w.lm), "--repo_id", "me/tiny", "--dry_run", str(w.full)],
            lambda w: f"output folder {str(w.full)!r} exists and is not empty", lambda w: w.full),
    Mistake("push without --repo_id", "push_to_hub", lambda w: ["--model_dir", str(w.lm)],
            lambda w: "the following arguments are required: --repo_id"),
    Mistake("push while HF_ENDPOINT is unreachable", "push_to_hub",
            lambda w: ["--model_dir", str(w.lm), "--repo_id", "me/tiny"],
            lambda w: f"cannot reach the Hub at {w.hub_url} (HF_ENDPOINT) to push me/tiny", env=_unreachable_hub),
    Mistake("classify with a causal LM folder", "gptlite-classify", lambda w: ["--model", str(w.lm), "hello"],
            lambda w: f"{str(w.lm)!r} holds a GPTLiteForCausalLM, not a sequence classifier"),
    Mistake("classify with a non-model folder", "gptlite-classify", lambda w: ["--model", str(w.not_a_model), "hi"],
            lambda w: f"no config.json in model folder {str(w.not_a_model)!r}"),
    Mistake("serve a path that is no model", "serve", lambda w: ["/nonexistent/model", "--port", "1"],
            lambda w: "model '/nonexistent/model' is neither an existing folder nor a valid Hub id"),
    Mistake("unknown command", "python -m hf_gptlite", lambda w: ["pretrian"],
            lambda w: "unknown command 'pretrian' (did you mean pretrain?)"),
]


@pytest.fixture(scope="module")
def resume_copy(w):
    """A copy of the pretraining run: resuming it with another model shape must leave it as it was."""
    w.resume_copy = w.root / "resume_copy"
    shutil.copytree(w.lm, w.resume_copy)
    return w.resume_copy


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.id)
def test_user_mistake_is_one_error_line_exit_2_and_writes_nothing(mistake, w, resume_copy, capfd, monkeypatch):
    import huggingface_hub.constants

    from hf_gptlite.loading import PROXY_VARIABLES

    if mistake.env:
        for key in PROXY_VARIABLES:
            monkeypatch.delenv(key, raising=False)
        for key, value in mistake.env(w).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", w.hub_url)  # read at import time
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("GPTLITE_DEBUG", raising=False)
    args = mistake.args(w)
    out = mistake.out(w) if mistake.out else None
    before = snapshot(out) if out else None
    capfd.readouterr()
    fn = ENTRY_POINTS.get(mistake.entry) or (lambda argv: run_command(mistake.entry, argv))
    status = fn(args)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert status == 2, err[-3000:]
    assert len(errors) == 1, err[-3000:]
    assert mistake.names(w) in errors[0], errors[0]
    assert "Traceback" not in err
    if mistake.quiet:
        assert lines == errors, err[-3000:]
    if out is not None:
        assert snapshot(out) == before, f"{out} changed"


def test_the_unreachable_judge_keeps_responses_and_names_them(w):
    """(after the table's judge case) what the error line promised is there: the responses and ROUGE-L."""
    folder = w.root / "m21"
    if not folder.exists():  # this test run alone
        judge_case = next(m for m in MISTAKES if m.id.startswith("unreachable judge"))
        assert call(run_command, "evaluate_instruct", judge_case.args(w))[0] == 2
    assert len((folder / "test_responses.jsonl").read_text().splitlines()) == 1
    assert "rouge_l" in json.loads((folder / "metrics.json").read_text())


def test_debug_shows_the_traceback_and_bugs_are_not_swallowed(w, capfd, monkeypatch):
    argv = ["--model_dir", "/nonexistent", "--repo_id", "me/tiny", "--dry_run", str(w.root / "never")]
    assert run_command("push_to_hub", [*argv, "--debug"]) == 2
    err = capfd.readouterr().err
    assert "Traceback" in err and "ModelFolderError" in err and err.strip().splitlines()[-1].startswith("error:")
    monkeypatch.setenv("GPTLITE_DEBUG", "1")
    assert run_command("push_to_hub", argv) == 2 and "Traceback" in capfd.readouterr().err
    monkeypatch.delenv("GPTLITE_DEBUG")

    def bug(argv):  # what a bug deep inside a library looks like: a bare OSError / ValueError / TypeError
        raise {"os": OSError, "value": ValueError, "type": TypeError}[argv[0]]("boom")

    for kind in ("os", "value", "type"):
        with pytest.raises((OSError, ValueError, TypeError), match="boom"):
            cli.run_entry_point(bug, [kind])
    assert cli.run_entry_point(lambda argv: None, []) == 0

    from hf_gptlite.errors import InputValueError
    from hf_gptlite.training.loop import TrainingDivergedError

    def diverged(argv):  # a NaN loss says which setting to change: a user error too
        raise TrainingDivergedError("loss became nan at step 3; try a lower learning_rate")

    capfd.readouterr()
    assert cli.run_entry_point(diverged, []) == 2
    assert capfd.readouterr().err == "error: loss became nan at step 3; try a lower learning_rate\n"
    assert cli.is_user_error(InputValueError("x")) and not cli.is_user_error(ValueError("x"))

    def interrupted(argv):  # Ctrl-C: one line and 130 (128 + SIGINT), the status a shell gives a killed command
        raise KeyboardInterrupt

    assert cli.run_entry_point(interrupted, []) == 130
    err = capfd.readouterr().err
    assert "interrupted (Ctrl-C)" in err and "Traceback" not in err


def test_report_to_names_an_installed_tracker(monkeypatch):
    import importlib.util

    from hf_gptlite.errors import InputValueError
    from hf_gptlite.pretrain import PretrainConfig

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(InputValueError, match="report_to: wandb is not installed; pip install wandb"):
        cli.parse_config(PretrainConfig, ["--report_to", "wandb"])
    for ok in ("auto", "none", "all", "NONE"):
        assert cli.parse_config(PretrainConfig, ["--report_to", ok]).report_to == ok
