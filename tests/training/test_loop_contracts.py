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
