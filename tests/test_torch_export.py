"""torch.export of the model: a prefill and one decoding step over a cache, with the fast paths on (the default):
under export they step aside (gptlite_kernels), and the exported programs compute what the eager model does."""

import torch
from transformers import DynamicCache
from transformers.integrations.executorch import register_dynamic_cache_export_support

from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM
from hf_gptlite.gptlite_kernels import enabled


class Prefill(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):  # -> logits, and the cache the model filled
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True)
        return out.logits, out.cache


class DecodeStep(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, cache):
        out = self.model(input_ids=input_ids, cache=cache, use_cache=True)
        return out.logits, out.cache


def filled_cache(model, x):
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(x, cache=cache, use_cache=True)
    return cache


def test_torch_export_prefill_and_one_decoding_step(restore_pytree_registry):
    torch.manual_seed(0)
    model = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny")).eval()
    assert model.config._attn_implementation == "sdpa"  # with the attention fast path when it is on
    x, mask = torch.randint(3, 512, (2, 7)), torch.ones(2, 7, dtype=torch.long)  # an all-ones mask: the shortcut's case
    with torch.no_grad():
        want = model(x, attention_mask=mask).logits
    register_dynamic_cache_export_support()  # transformers' pytree for DynamicCache (undone after the test)
    prefill = torch.export.export(Prefill(model), (x, mask))
    with torch.no_grad():
        logits, cache = prefill.module()(x, mask)
    torch.testing.assert_close(logits, want, atol=1e-5, rtol=1e-5)
    assert type(cache) is DynamicCache and cache.get_seq_length() == 7  # under export, not the growing cache
    nxt = torch.randint(3, 512, (2, 1))
    with torch.no_grad():
        want_step = model(nxt, cache=filled_cache(model, x), use_cache=True).logits
    step = torch.export.export(DecodeStep(model), (nxt, filled_cache(model, x)))
    with torch.no_grad():
        got, cache = step.module()(nxt, filled_cache(model, x))
    torch.testing.assert_close(got, want_step, atol=1e-5, rtol=1e-5)
    assert cache.get_seq_length() == 8


def test_the_fast_paths_must_step_aside_under_export(monkeypatch):
    """Without stepping aside, the mask shortcut's data-dependent check cannot be traced: what the test above shows
    is the stepping aside at work, not an export that would pass anyway."""
    import pytest

    from hf_gptlite import gptlite_kernels

    if not enabled("mask"):
        pytest.skip("the mask fast path is off (GPTLITE_FAST_PATHS)")
    model = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny")).eval()
    x, mask = torch.randint(3, 512, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    monkeypatch.setattr(gptlite_kernels, "_tracing", lambda: False)
    with pytest.raises(Exception, match="data-dependent|Could not guard"):
        torch.export.export(Prefill(model), (x, mask))
