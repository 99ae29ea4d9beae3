"""The shared training loop and the pretraining recipe: tiny models, few steps, real processes."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import hf_gptlite  # noqa: F401  (Auto classes)
from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM
from hf_gptlite.data.lm import (
    build_lm_data,
    check_block_size,
    lm_dataloaders,
    load_text_documents,
    split_document,
)
from hf_gptlite.data.text import default_corpus_files
from hf_gptlite.pretraining import PretrainConfig, run_pretraining
from hf_gptlite.tokenization import train_bpe_tokenizer
from hf_gptlite.training import (
    Trainer,
    TrainingConfig,
    TrainingDivergedError,
    WarmupCosine,
    list_checkpoints,
    parameter_groups,
    parse_config,
    resolve_mixed_precision,
)

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "pretrain.py"


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    return env


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two small 'books' (slices of the embedded novels) and a 300-token tokenizer trained on them."""
    folder = tmp_path_factory.mktemp("corpus")
    files = []
    for i, path in enumerate(default_corpus_files()[:2]):
        text = path.read_text(encoding="utf-8")[20_000:50_000]
        files.append(folder / f"book{i}.txt")
        files[-1].write_text(text, encoding="utf-8")
    train_docs, _ = load_text_documents(files, clean=True)
    tokenizer = train_bpe_tokenizer(train_docs, vocab_size=300, show_progress=False)
    tokenizer.save_pretrained(folder / "tokenizer")
    return {"files": [str(f) for f in files], "tokenizer": tokenizer, "tokenizer_dir": str(folder / "tokenizer")}


TINY_FLAGS = [
    "--model_preset", "tiny", "--block_size", "32", "--per_device_batch_size", "8", "--logging_steps", "2",
    "--max_train_minutes", "0", "--report_to", "none", "--sample_max_new_tokens", "8",
]


def _tiny_cfg(corpus, out, **kw):
    values = dict(
        output_dir=str(out), train_files=corpus["files"], tokenizer_name_or_path=corpus["tokenizer_dir"],
        model_preset="tiny", block_size=32, per_device_batch_size=8, max_steps=10, logging_steps=2, eval_steps=0,
        save_steps=0, max_train_minutes=None, report_to="none", sample_max_new_tokens=8, clean_text=True,
    )
    values.update(kw)
    return PretrainConfig(**values)


# ---- pieces -------------------------------------------------------------------------------------
def test_parameter_groups_no_decay_on_norms_biases_embeddings():
    model = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny"))
    decay, no_decay = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "transformer.h.0.attn.c_attn.weight" in decayed and "transformer.h.1.mlp.c_fc.weight" in decayed
    assert not any(n.endswith(".bias") or ".ln_" in n or "wte" in n or "wpe" in n for n in decayed)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_mixed_precision_auto_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert resolve_mixed_precision("auto") == "no"  # AVX2-only CPU: bf16 would be emulated, far slower
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert resolve_mixed_precision("auto") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_mixed_precision("auto") == "fp16"
    assert resolve_mixed_precision("no") == "no"
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainingConfig(mixed_precision="fp8")


def test_warmup_cosine_schedule():
    s = WarmupCosine(warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert s(0) < s(5) < s(9) < s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.55)  # half-way down the cosine
    assert s(110) == pytest.approx(0.1) and s(500) == pytest.approx(0.1)


def test_parse_config_yaml_then_command_line(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("learning_rate: 1e-3\nmax_steps: 7\ntrain_files: [a.txt, b.txt]\nstreaming: true\n")
    cfg = parse_config(PretrainConfig, ["--config", str(yaml_file), "--max_steps", "9", "--seed", "3"])
    assert cfg.learning_rate == 1e-3 and isinstance(cfg.learning_rate, float)
    assert (cfg.max_steps, cfg.seed, cfg.train_files, cfg.streaming) == (9, 3, ["a.txt", "b.txt"], True)
    yaml_file.write_text("max_stepz: 7\n")
    with pytest.raises(ValueError, match="unknown config keys \\['max_stepz'\\]"):
        parse_config(PretrainConfig, ["--config", str(yaml_file)])


def test_shipped_configs_parse():
    for name in ("pretrain_pt_tiny.yaml", "pretrain_gpt2_small_gpu.yaml"):
        cfg = parse_config(PretrainConfig, ["--config", str(ROOT / "recipes" / "configs" / name)])
        assert cfg.output_dir.startswith("runs/")
    gpu = parse_config(PretrainConfig, ["--config", str(ROOT / "recipes/configs/pretrain_gpt2_small_gpu.yaml")])
    assert gpu.model_preset == "gpt2-small" and gpu.block_size <= 1024


def test_validation_is_held_out_by_document_and_scores_every_token(corpus):
    text = "primeira linha\nsegunda linha\nterceira linha\nquarta linha\n"
    head, tail = split_document(text, 0.25)
    assert head + "\n" + tail == text.strip("\n") and tail == "quarta linha"
    train_docs, val_docs = load_text_documents(corpus["files"], clean=True, validation_fraction=0.1)
    assert len(train_docs) == len(val_docs) == 2
    for train_doc, val_doc in zip(train_docs, val_docs, strict=True):
        assert val_doc not in train_doc and 0.05 < len(val_doc) / (len(train_doc) + len(val_doc)) < 0.15
    tok = corpus["tokenizer"]
    data = build_lm_data(tok, 32, train_docs, val_docs)
    n_val_tokens = sum(len(tok(d, add_special_tokens=False)["input_ids"]) for d in val_docs)
    labels = data.validation[:]["labels"]  # (blocks, 32)
    assert int((labels[:, 1:] != -100).sum()) == n_val_tokens + len(val_docs)  # each token (+ [EOS]) once
    assert data.eval_num_characters == sum(map(len, val_docs)) + len(val_docs)
    train = data.train[:]
    assert train["input_ids"].shape[1] == 32 and bool((train["input_ids"] == train["labels"]).all())


def test_streamed_documents_train_through_the_same_loop(corpus, tmp_path):
    import datasets

    train_docs, val_docs = load_text_documents(corpus["files"], clean=True)
    stream = datasets.Dataset.from_dict({"text": train_docs}).to_iterable_dataset()
    data = build_lm_data(corpus["tokenizer"], 32, train_dataset=stream, val_docs=val_docs)
    assert isinstance(data.train, datasets.IterableDataset) and data.eval_num_characters > 0
    train_loader, eval_loader = lm_dataloaders(data, batch_size=4)
    model = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny", vocab_size=len(corpus["tokenizer"])))
    with pytest.raises(ValueError, match="set max_steps"):
        Trainer(model, train_loader, eval_loader, corpus["tokenizer"],
                TrainingConfig(output_dir=str(tmp_path), report_to="none"))
    metrics = Trainer(model, train_loader, eval_loader, corpus["tokenizer"],
                      TrainingConfig(output_dir=str(tmp_path), max_steps=4, report_to="none"),
                      eval_num_characters=data.eval_num_characters).train()
    assert metrics["global_step"] == 4 and metrics["train_tokens"] == 4 * 4 * 32


# ---- bad input ----------------------------------------------------------------------------------
def test_missing_and_empty_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_text_documents([tmp_path / "nope.txt"])
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match="empty.*empty.txt"):
        load_text_documents([tmp_path / "empty.txt"])


def test_context_longer_than_the_model_is_refused(corpus, tmp_path):
    with pytest.raises(ValueError, match="block_size=256 .*max_position_embeddings=128"):
        run_pretraining(_tiny_cfg(corpus, tmp_path, block_size=256))
    with pytest.raises(ValueError, match="block_size"):
        check_block_size(2048, 1024)


def _tiny_trainer(corpus, out, hidden_size=64, model_cls=GPTLiteForCausalLM, **kw):
    tok = corpus["tokenizer"]
    config = GPTLiteConfig.from_preset("tiny", hidden_size=hidden_size, vocab_size=len(tok), hidden_dropout_prob=0.0)
    torch.manual_seed(0)
    model = model_cls(config)
    train_docs, val_docs = load_text_documents(corpus["files"], clean=True)
    data = build_lm_data(tok, 32, train_docs, val_docs)
    train_loader, eval_loader = lm_dataloaders(data, batch_size=8)
    values = dict(output_dir=str(out), max_steps=12, logging_steps=2, report_to="none", learning_rate=3e-3)
    values.update(kw)
    return Trainer(model, train_loader, eval_loader, tok, TrainingConfig(**values),
                   eval_num_characters=data.eval_num_characters)


def test_checkpoint_from_another_model_is_refused(corpus, tmp_path):
    _tiny_trainer(corpus, tmp_path, max_steps=2, save_steps=2).train()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_2"]
    other = _tiny_trainer(corpus, tmp_path / "other", hidden_size=32, max_steps=4,
                          resume_from_checkpoint=str(tmp_path / "checkpoints" / "step_2"))
    with pytest.raises(ValueError, match="another model.*hidden_size.*64"):
        other.train()
    with pytest.raises(ValueError, match="not a training checkpoint"):
        _tiny_trainer(corpus, tmp_path / "x", resume_from_checkpoint=str(tmp_path)).train()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        _tiny_trainer(corpus, tmp_path / "y", resume_from_checkpoint="latest").train()


class _BlowsUp(GPTLiteForCausalLM):
    """Returns a NaN loss from its 8th training forward on."""

    calls = 0

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        if self.training:
            type(self).calls += 1
            if type(self).calls >= 8:
                out.loss = out.loss * float("nan")
        return out


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path):
    trainer = _tiny_trainer(corpus, tmp_path, model_cls=_BlowsUp, max_steps=20, save_steps=5)
    with pytest.raises(TrainingDivergedError, match="loss became nan at step 8.*step_5"):
        trainer.train()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_5"]
    weights = load_file(tmp_path / "checkpoints" / "step_5" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert not (tmp_path / "model.safetensors").exists()  # no final model from a diverged run


def test_time_budget_ends_the_run_on_time_with_a_shorter_schedule(corpus, tmp_path):
    trainer = _tiny_trainer(corpus, tmp_path, max_steps=100_000, max_train_minutes=0.25, warmup_steps=2)
    metrics = trainer.train()
    assert 2 < metrics["global_step"] < 100_000
    assert metrics["train_runtime_s"] < 15 + 5  # the budget plus at most a few slow steps
    assert trainer.schedule.total_steps < 100_000  # the cosine was fitted to the budget ...
    lr = [r["learning_rate"] for r in trainer.history if "learning_rate" in r]
    assert lr[-1] < 0.5 * max(lr)  # ... so the learning rate was annealed before the end


# ---- whole runs ---------------------------------------------------------------------------------
def test_tiny_run_learns_and_writes_a_loadable_model(corpus, tmp_path):
    from hf_gptlite.main import main

    out = tmp_path / "run"
    metrics = main(["--output_dir", str(out), "--train_files", *corpus["files"], "--vocab_size", "300",
                    "--max_steps", "60", "--learning_rate", "5e-3", "--warmup_steps", "5", "--eval_steps", "30",
                    "--save_steps", "0", *TINY_FLAGS])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    evals = [r for r in log if "eval_loss" in r]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 60
    start, end = evals[0]["eval_loss"], evals[-1]["eval_loss"]
    assert start > math.log(300) - 0.3  # an untrained model is near uniform
    assert end < start - 1.5, (start, end)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["eval_loss"] == pytest.approx(end)
    assert on_disk["eval_bits_per_char"] == pytest.approx(metrics["eval_bits_per_char"])
    for name in ("loss_curve.png", "training_config.json", "model.safetensors", "tokenizer.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "training_config.json").read_text())["max_steps"] == 60
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "GPTLiteForCausalLM" and model.config.vocab_size == 300
    assert isinstance(metrics["demo_sample"], str) and metrics["demo_sample"].startswith("A casa")


@pytest.mark.slow
def test_two_process_ddp_run(corpus, tmp_path):
    out = tmp_path / "ddp"
    # accelerate 1.15: `launch --cpu --num_processes 2` starts ONE process (multi-process CPU there needs
    # mpirun); torchrun's launcher (`--multi_gpu`) with ACCELERATE_USE_CPU=1 gives real 2-process DDP on gloo.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(RECIPE),
           "--config", str(ROOT / "recipes/configs/pretrain_pt_tiny.yaml"), "--output_dir", str(out),
           "--train_files", *corpus["files"], "--vocab_size", "300", "--max_steps", "6", "--save_steps", "3",
           "--eval_steps", "0", *TINY_FLAGS]
    result = subprocess.run(cmd, env=dict(_env(), ACCELERATE_USE_CPU="1"), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["global_step"] == 6
    assert metrics["train_tokens"] == 6 * 2 * 8 * 32  # steps x processes x batch x block
    assert sorted(p.name for p in (out / "checkpoints" / "step_6").glob("random_states_*")) == [
        "random_states_0.pkl", "random_states_1.pkl"]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == 300 and math.isfinite(metrics["eval_loss"])


def _run(out, corpus, extra=()):
    cmd = [sys.executable, str(RECIPE), "--output_dir", str(out), "--train_files", *corpus["files"],
           "--tokenizer_name_or_path", corpus["tokenizer_dir"], "--max_steps", "30", "--save_steps", "5",
           "--dropout", "0.1", "--seed", "7", "--eval_steps", "10", *TINY_FLAGS, *extra]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(corpus, tmp_path):
    straight = _run(tmp_path / "straight", corpus)
    assert straight.wait(timeout=300) == 0, straight.stderr.read()[-3000:]

    out = tmp_path / "killed"
    victim = _run(out, corpus)
    deadline = time.time() + 240
    while not list_checkpoints(out) and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "metrics.json").exists()
    killed_at = list_checkpoints(out)[-1].name
    assert killed_at != "step_30"

    resumed = _run(out, corpus, ["--resume_from_checkpoint", "latest"])
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-3000:]
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after resuming from {killed_at}"
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # the log was cut back to the checkpoint, no duplicate steps
