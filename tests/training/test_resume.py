"""The resume contract (hf_gptlite/training/resume.py, docs/training_loop.md): a resumed run may change the length
of the run, its learning-rate schedule and optimizer settings, which take effect from the resume step by the
documented rule; it may not change what fixes the examples each step sees (batch size, accumulation, processes, seed,
the data) or the optimizer's groups: that is one error naming the setting and both values, before anything is
written. A time budget counts the time the run already spent."""

import json
import shutil

import loop_worker as W
import pytest
from test_entry_points import snapshot

from hf_gptlite.errors import InputValueError
from hf_gptlite.training import WarmupCosine, list_checkpoints

BASE = dict(max_steps=4, save_steps=4, learning_rate=1e-2, warmup_steps=1, min_lr_ratio=0.1)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """4 steps of the tiny task (accumulation 2), a checkpoint at step 4."""
    out = tmp_path_factory.mktemp("resume") / "base"
    W.make_trainer(out, gas=2, **BASE).train()
    assert [p.name for p in list_checkpoints(out)] == ["step_4"]
    return out


def resumed(base_run, tmp_path, **changes):
    """A copy of the base run, resumed from its checkpoint with ``changes``; returns the trainer after train()."""
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    kw = {"gas": 2, **BASE, "max_steps": 8, "resume_from_checkpoint": "latest", **changes}
    trainer = W.make_trainer(out, **kw)
    trainer.train()
    return trainer


def logged_lrs(trainer) -> dict[int, float]:
    return {r["step"]: r["learning_rate"] for r in trainer.history if "learning_rate" in r}


@pytest.mark.parametrize("change", [
    {},  # max_steps 4 -> 8 alone
    {"learning_rate": 3e-3},
    {"warmup_steps": 6},
    {"min_lr_ratio": 0.5},
    {"learning_rate": 2e-2, "warmup_steps": 5, "min_lr_ratio": 0.0},
], ids=lambda c: ",".join(c) or "max_steps")
def test_a_resume_runs_the_extra_steps_on_the_schedule_of_the_new_settings(base_run, tmp_path, change):
    """Resumed at step 4 with max_steps 8 (and a new learning_rate / warmup_steps / min_lr_ratio): steps 5-8 run,
    and the LR logged after each step s (the one update s+1 uses) is learning_rate x WarmupCosine(warmup, 8,
    min_lr_ratio)(s) with the NEW values; steps 1-4 keep the log of the first run."""
    trainer = resumed(base_run, tmp_path, **change)
    new = {**BASE, **change}
    assert trainer.global_step == trainer.total_steps == 8
    lrs = logged_lrs(trainer)
    schedule = WarmupCosine(new["warmup_steps"], 8, new["min_lr_ratio"])
    for s in range(5, 9):
        assert lrs[s] == pytest.approx(new["learning_rate"] * schedule(s), rel=1e-12), s
    first = WarmupCosine(BASE["warmup_steps"], 4, BASE["min_lr_ratio"])
    for s in range(1, 5):
        assert lrs[s] == pytest.approx(BASE["learning_rate"] * first(s), rel=1e-12), s
    # what the optimizer holds is what was logged (every group: one scale with layer_lr_decay off)
    assert {g["lr"] for g in trainer.optimizer.param_groups} == {lrs[8]}
    # the checkpoint's schedule would have been flat at the old floor from step 4 on
    assert lrs[5] != pytest.approx(BASE["learning_rate"] * BASE["min_lr_ratio"])


def test_a_resume_takes_the_new_optimizer_settings(base_run, tmp_path):
    trainer = resumed(base_run, tmp_path, weight_decay=0.3, adam_beta2=0.9, adam_epsilon=1e-6)
    decayed = [g for g in trainer.optimizer.param_groups if g["weight_decay"] > 0]
    assert decayed and all(g["weight_decay"] == 0.3 for g in decayed)
    assert all(g["betas"] == (0.9, 0.9) and g["eps"] == 1e-6 for g in trainer.optimizer.param_groups)


def test_the_time_budget_counts_the_time_already_spent(base_run, tmp_path):
    """The checkpoint says the run already used 60 s; resumed under a 1-minute budget, it stops after one step
    (it used to start the whole budget again)."""
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    state_file = out / "checkpoints" / "step_4" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    assert state["run_seconds"] > 0
    state_file.write_text(json.dumps({**state, "run_seconds": 60.0}))
    trainer = W.make_trainer(out, gas=2, **{**BASE, "max_steps": 1000, "max_train_minutes": 1.0,
                                            "resume_from_checkpoint": "latest"})
    trainer.train()
    assert trainer.global_step == 5


@pytest.mark.parametrize("change, key, saved, now", [
    ({"batch": 4}, "per_device_batch_size", 2, 4),
    ({"gas": 4}, "gradient_accumulation_steps", 2, 4),
    ({"seed": 4}, "seed", 3, 4),
    ({"copies": 2}, "train_examples", 20, 40),
    ({"layer_lr_decay": 0.5}, "layer_lr_decay", 1.0, 0.5),
    ("num_processes", "num_processes", 2, 1),
])
def test_a_resume_that_changes_what_must_match_is_one_error_naming_both_values(base_run, tmp_path, change, key,
                                                                                saved, now):
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    if change == "num_processes":  # written by 2 processes (the 2-process launch is in test_loop_semantics)
        state_file = out / "checkpoints" / "step_4" / "trainer_state.json"
        state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "num_processes": 2}))
        change = {}
    before = snapshot(out)
    kw = {"gas": 2, **BASE, "max_steps": 8, "resume_from_checkpoint": "latest", **change}
    trainer = W.make_trainer(out, **kw)
    with pytest.raises(InputValueError, match=f"{key} was {saved} in the checkpoint and is {now} now"):
        trainer.train()
    assert snapshot(out) == before


def test_a_resume_planned_shorter_than_its_checkpoint_is_an_error(base_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    trainer = W.make_trainer(out, gas=2, **{**BASE, "max_steps": 3, "resume_from_checkpoint": "latest"})
    with pytest.raises(InputValueError, match="planned for 3 steps .* checkpoint is at step 4; pass a larger"):
        trainer.train()
