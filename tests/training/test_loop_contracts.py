"""What the loop leaves alone and what it refuses: a non-finite gradient stops the run with clipping off too; the
model comes back as it was handed in; evaluation and samples leave every random stream as they found it."""

import loop_worker as W
import pytest
import torch
from safetensors.torch import load_file

from hf_gptlite.training import TrainingDivergedError, list_checkpoints


class _NanGrad(torch.autograd.Function):
    """The identity forward; a NaN gradient backward: a finite loss whose gradient is NaN."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class NanGradForCausalLM(W.GPTLiteForCausalLM):
    """A finite loss with a NaN gradient from its 5th training forward on (step 3 with accumulation 2)."""

    calls = 0

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        if self.training:
            type(self).calls += 1
            if type(self).calls >= 5:
                out.loss = _NanGrad.apply(out.loss)
        return out


def test_a_nan_gradient_with_clipping_off_stops_before_the_update_and_any_save(tmp_path):
    NanGradForCausalLM.calls = 0
    trainer = W.make_trainer(tmp_path, gas=2, model_cls=NanGradForCausalLM, max_grad_norm=0.0, max_steps=6,
                             save_steps=1)
    with pytest.raises(TrainingDivergedError, match=r"gradient norm became nan at step 3;.*step_2"):
        trainer.train()
    assert trainer.global_step == 2
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_1", "step_2"]
    saved = sorted(tmp_path.rglob("*.safetensors"))
    assert saved and not (tmp_path / "model.safetensors").exists()
    for path in saved:
        assert all(torch.isfinite(w).all() for w in load_file(path).values()), path
    # the weights in memory were not updated with the NaN gradient either
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_clipping_off_leaves_the_gradient_as_it_is(tmp_path):
    """max_grad_norm=0 measures the norm (logged) but does not scale the gradient: the same weights as a clip
    threshold no gradient reaches."""
    a = W.make_trainer(tmp_path / "off", max_grad_norm=0.0, max_steps=3)
    a.train()
    b = W.make_trainer(tmp_path / "huge", max_grad_norm=1e9, max_steps=3)
    b.train()
    wa, wb = load_file(tmp_path / "off" / "model.safetensors"), load_file(tmp_path / "huge" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert all("grad_norm" in r for r in a.history if "loss" in r)


def test_train_gives_the_model_back_as_it_found_it_and_a_reused_model_trains_in_the_precision_asked(tmp_path):
    """The same model object trained in bf16, then with mixed_precision 'no': the second run's Linear layers
    compute in fp32 (they used to keep the first run's bf16 autocast), and after each run the model has no wrapper
    on its forward, no hook, and the train/eval mode it was handed in with."""
    model = W.tiny_model().eval()
    loader = torch.utils.data.DataLoader(W.ragged_examples()[:4], batch_size=W.BATCH)
    hooks_before = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    W.Trainer(model, loader, None, None, W.training_config(tmp_path / "bf16", "bf16", max_steps=1)).train()
    assert "forward" not in vars(model) and not model.training

    seen = []
    linear = model.transformer.h[0].mlp.c_fc
    handle = linear.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    metrics = W.Trainer(model, loader, None, None, W.training_config(tmp_path / "no", "no", max_steps=1)).train()
    assert metrics["mixed_precision"] == "no"
    assert seen and set(seen) == {torch.float32}, seen  # every forward of the second run, in fp32
    seen.clear()
    with torch.no_grad():
        model(input_ids=W.ragged_examples()[0]["input_ids"][None])
    assert seen == [torch.float32]
    handle.remove()
    assert "forward" not in vars(model) and "_original_forward" not in vars(model) and not model.training
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()] == hooks_before


def test_evaluations_and_samples_leave_every_random_stream_as_they_found_it(tmp_path):
    """Dropout 0.1: a run evaluating every step (and sampling) ends with weights bit-identical to the same run with
    neither. The DataLoader of an evaluation pass used to draw its seed from torch's random stream, which dropout
    follows."""
    import random

    import numpy as np

    from hf_gptlite.training.evaluation import rng_kept

    plain = W.make_trainer(tmp_path / "plain", gas=2, dropout=0.1, max_steps=4)
    plain.train()
    eval_loader = torch.utils.data.DataLoader(W.ragged_examples(seed=1), batch_size=W.BATCH, shuffle=True)
    evals = W.make_trainer(tmp_path / "evals", gas=2, dropout=0.1, max_steps=4, eval_loader=eval_loader,
                           eval_steps=1)
    evals.train()
    assert sum("eval_loss" in r for r in evals.history) == 1 + 3 + 1
    a, b = load_file(tmp_path / "plain" / "model.safetensors"), load_file(tmp_path / "evals" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # every stream, by hand
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    with rng_kept(torch.device("cpu")):
        random.random(), np.random.rand(), torch.rand(3)
    assert random.getstate() == states[0] and (np.random.get_state()[1] == states[1]).all()
    assert torch.equal(torch.get_rng_state(), states[2])


def test_evaluation_makes_no_full_size_fp32_copy_of_the_logits(tmp_path):
    """A causal LM's evaluation allocates no fp32 tensor of the logits' size beyond what the model's forward itself
    allocates (it used to add an upcast copy and a log-softmax of (N, V)); the loss is still exact."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    examples = W.ragged_examples(seed=1)[:4]
    batch = {k: torch.stack([e[k] for e in examples]) for k in examples[0]}
    threshold = batch["input_ids"].numel() * W.VOCAB // 2  # half the logits: a per-example block is a quarter

    class LargeFloat32(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.numel() >= threshold \
                        and not t._is_view():
                    self.seen.append(str(func))
            return out

    trainer = W.make_trainer(tmp_path, eval_loader=torch.utils.data.DataLoader(examples, batch_size=4), max_steps=1)
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    with torch.no_grad(), LargeFloat32() as forward_only:
        model(**batch)
    with LargeFloat32() as evaluation:
        metrics = trainer.evaluate()
    assert forward_only.seen and sorted(evaluation.seen) == sorted(forward_only.seen), evaluation.seen
    with torch.no_grad():
        logits = model(**batch).logits[:, :-1]
        exact = torch.nn.functional.cross_entropy(logits.reshape(-1, W.VOCAB), batch["labels"][:, 1:].reshape(-1),
                                                  ignore_index=-100)
    assert metrics["eval_loss"] == pytest.approx(exact.item(), rel=1e-6)


def test_a_fresh_run_into_a_folder_that_holds_a_run_is_refused_or_clears_it(tmp_path):
    from hf_gptlite.errors import OutputInTheWayError

    W.make_trainer(tmp_path, max_steps=2, save_steps=2).train()
    with pytest.raises(OutputInTheWayError, match="already holds a run .*--resume_from_checkpoint latest.*"
                                                  "--overwrite_output_dir"):
        W.make_trainer(tmp_path, max_steps=1, save_steps=1).train()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_2"]  # untouched
    W.make_trainer(tmp_path, max_steps=1, save_steps=1, overwrite_output_dir=True).train()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_1"]  # latest is the new run's


def test_an_fsdp_config_where_accelerate_runs_no_fsdp_is_a_warning(tmp_path, monkeypatch, capsys):
    """ACCELERATE_USE_FSDP on a run accelerate does not shard (one CPU process): a warning line, then the run."""
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    trainer = W.make_trainer(tmp_path, max_steps=1)
    assert "warning: an FSDP launch config, but accelerate runs NO here" in capsys.readouterr().out
    assert trainer.train()["global_step"] == 1
