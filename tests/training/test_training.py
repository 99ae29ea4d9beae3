"""The generic training loop: optimizer pieces, bad input, NaN, time budget, two processes, kill and resume.
Driven by tiny language models on slices of the embedded novels (fixtures in conftest.py)."""

import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, TINY_FLAGS, recipe_env, tiny_pretrain_cfg, tiny_trainer
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM
from hf_gptlite.training import (
    TrainingConfig,
    TrainingDivergedError,
    WarmupCosine,
    list_checkpoints,
    parameter_groups,
    resolve_mixed_precision,
)

RECIPE = REPO / "recipes" / "pretrain.py"


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


def test_layer_lr_decay_gives_each_block_its_learning_rate():
    from hf_gptlite import GPTLiteForSequenceClassification

    config = GPTLiteConfig.from_preset("tiny", num_labels=2)  # 2 blocks
    model = GPTLiteForSequenceClassification(config)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = parameter_groups(model, 0.1, layer_lr_decay=0.5, learning_rate=1e-3)
    lr_of = {names[id(p)]: (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert len(lr_of) == len(names)  # every parameter once
    n = config.num_hidden_layers
    assert lr_of["score.weight"] == (1e-3, 0.1) and lr_of["transformer.ln_f.weight"] == (1e-3, 0.0)
    assert lr_of[f"transformer.h.{n - 1}.mlp.c_fc.weight"] == (1e-3 * 0.5, 0.1)
    assert lr_of["transformer.h.0.attn.c_attn.weight"] == (1e-3 * 0.5**n, 0.1)
    assert lr_of["transformer.h.0.ln_1.bias"] == (1e-3 * 0.5**n, 0.0)
    assert lr_of["transformer.wte.weight"] == (1e-3 * 0.5 ** (n + 1), 0.0)
    # the schedule scales every group alike: LambdaLR keeps the ratios
    opt = torch.optim.AdamW(groups)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(0, 10, 0.1))
    for _ in range(5):
        opt.step()
        sched.step()
    ratios = {round(g["lr"] / g["initial_lr"], 12) for g in opt.param_groups}
    assert len(ratios) == 1 and 0.1 < ratios.pop() < 1.0
    # off (1.0): the two plain groups
    assert len(parameter_groups(model, 0.1)) == 2 and "lr" not in parameter_groups(model, 0.1)[0]


def test_mixed_precision_auto_follows_the_hardware(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
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


def test_mixed_precision_auto_takes_the_launchers_choice(monkeypatch):
    """accelerate launch --mixed_precision X / an accelerate config file set ACCELERATE_MIXED_PRECISION: auto takes it
    over the hardware rule; an explicit value of the run's own wins over the launcher."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert resolve_mixed_precision("auto") == "bf16"
    assert resolve_mixed_precision("no") == "no"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert resolve_mixed_precision("auto") == "no"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "")
    assert resolve_mixed_precision("auto") == "bf16"


@pytest.mark.slow
def test_accelerate_launch_mixed_precision_reaches_an_auto_run(tmp_path):
    """The real launcher, one process: `accelerate launch --mixed_precision bf16` and a run configured with auto
    trains in bf16 (auto used to pass its own hardware answer, overriding the launcher)."""
    worker = REPO / "tests" / "training" / "loop_worker.py"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "bf16", "--dynamo_backend", "no", str(worker), str(tmp_path), "one_step:auto"]
    proc = subprocess.run(cmd, env=dict(recipe_env(), ACCELERATE_USE_CPU="1"), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "one_step_auto" / "result_rank0.json").read_text())
    assert "crash" not in result, result["crash"]
    assert result["mixed_precision"] == "bf16" and result["metrics"]["mixed_precision"] == "bf16"


def test_warmup_cosine_schedule():
    s = WarmupCosine(warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert s(0) < s(5) < s(9) < s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.55)  # half-way down the cosine
    assert s(110) == pytest.approx(0.1) and s(500) == pytest.approx(0.1)


# ---- bad input ----------------------------------------------------------------------------------
def test_checkpoint_from_another_model_is_refused(corpus, tmp_path):
    tiny_trainer(corpus, tmp_path, max_steps=2, save_steps=2).train()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_2"]
    other = tiny_trainer(corpus, tmp_path / "other", hidden_size=32, max_steps=4,
                          resume_from_checkpoint=str(tmp_path / "checkpoints" / "step_2"))
    with pytest.raises(ValueError, match="another model.*hidden_size.*64"):
        other.train()
    with pytest.raises(ValueError, match="not a training checkpoint"):
        tiny_trainer(corpus, tmp_path / "x", resume_from_checkpoint=str(tmp_path)).train()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        tiny_trainer(corpus, tmp_path / "y", resume_from_checkpoint="latest").train()


class _BlowsUpForCausalLM(GPTLiteForCausalLM):
    """Returns a NaN loss from its 8th training forward on."""

    calls = 0

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        if self.training:
            type(self).calls += 1
            if type(self).calls >= 8:
                out.loss = out.loss * float("nan")
        return out


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path, precision):
    _BlowsUpForCausalLM.calls = 0
    trainer = tiny_trainer(corpus, tmp_path, model_cls=_BlowsUpForCausalLM, max_steps=20, save_steps=5, mixed_precision=precision)
    with pytest.raises(TrainingDivergedError, match="loss became nan at step 8.*step_5"):
        trainer.train()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_5"]
    weights = load_file(tmp_path / "checkpoints" / "step_5" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert not (tmp_path / "model.safetensors").exists()  # no final model from a diverged run


def test_time_budget_ends_the_run_on_time_with_a_shorter_schedule(corpus, tmp_path):
    trainer = tiny_trainer(corpus, tmp_path, max_steps=100_000, max_train_minutes=0.1, warmup_steps=2)
    metrics = trainer.train()
    assert 2 < metrics["global_step"] < 100_000
    assert metrics["train_runtime_s"] < 6 + 5  # the budget plus at most a few slow steps
    assert trainer.schedule.total_steps < 100_000  # the cosine was fitted to the budget ...
    lr = [r["learning_rate"] for r in trainer.history if "learning_rate" in r]
    assert lr[-1] < 0.5 * max(lr)  # ... so the learning rate was annealed before the end


# ---- whole runs ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_process_ddp_run(corpus, tmp_path):
    out = tmp_path / "ddp"
    # accelerate 1.15: `launch --cpu --num_processes 2` starts ONE process (multi-process CPU there needs
    # mpirun); torchrun's launcher (`--multi_gpu`) with ACCELERATE_USE_CPU=1 gives real 2-process DDP on gloo.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(RECIPE),
           "--config", str(REPO / "recipes/configs/pretrain_pt_tiny.yaml"), "--output_dir", str(out),
           "--train_files", *corpus["files"], "--vocab_size", "300", "--max_steps", "6", "--save_steps", "3",
           "--eval_steps", "0", *TINY_FLAGS]
    result = subprocess.run(cmd, env=dict(recipe_env(), ACCELERATE_USE_CPU="1"), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["global_step"] == 6
    assert metrics["train_tokens"] == 6 * 2 * 8 * 32  # steps x processes x batch x block
    assert sorted(p.name for p in (out / "checkpoints" / "step_6").glob("random_states_*")) == [
        "random_states_0.pkl", "random_states_1.pkl"]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == 300 and math.isfinite(metrics["eval_loss"])


def test_two_runs_in_one_process_with_different_precisions(corpus, tmp_path):
    """Pretraining in fp32, then bf16, then fp32 again, in one process: each run gets its own precision (accelerate's
    per-process state is reset for each), and the third run ends with the first run's weights, bit for bit."""
    from hf_gptlite.pretrain import run_pretraining

    weights = []
    for i, precision in enumerate(["no", "bf16", "no"]):
        out = tmp_path / f"run{i}"
        metrics = run_pretraining(tiny_pretrain_cfg(corpus, out, max_steps=3, mixed_precision=precision))
        assert metrics["mixed_precision"] == precision and metrics["global_step"] == 3
        weights.append(load_file(out / "model.safetensors"))
    assert all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # bf16 really ran


def _run(out, corpus, extra=()):
    cmd = [sys.executable, str(RECIPE), "--output_dir", str(out), "--train_files", *corpus["files"],
           "--tokenizer_name_or_path", corpus["tokenizer_dir"], "--max_steps", "30", "--save_steps", "5",
           "--dropout", "0.1", "--seed", "7", "--eval_steps", "10", *TINY_FLAGS, *extra]
    return subprocess.Popen(cmd, env=recipe_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


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
