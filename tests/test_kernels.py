"""gptlite_kernels: the switch, and each fast path computing what the plain path computes."""

import pytest
import torch
import torch.nn.functional as F
from transformers import DynamicCache, StaticCache

from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM
from hf_gptlite import gptlite_kernels as k


@pytest.fixture
def restore_paths():
    before = ",".join(sorted(k._enabled)) or "none"
    yield
    k.set_fast_paths(before)


def test_the_switch(restore_paths):
    assert k.set_fast_paths("all") == set(k.FAST_PATHS)
    assert k.set_fast_paths("none") == set()
    assert k.set_fast_paths("cache, loss") == {"cache", "loss"} and k.enabled("cache") and not k.enabled("mask")
    with pytest.raises(ValueError, match="unknown \\['kache'\\]"):
        k.set_fast_paths("kache")


@pytest.mark.parametrize("rows", [2, 8, 32])
def test_output_layer_gives_the_linear_numbers_in_either_layout(rows, monkeypatch, restore_paths):
    k.set_fast_paths("all")
    head = k.OutputLayer(64, 300, bias=False).eval()
    x = torch.randn(rows, 1, 64)
    want = F.linear(x, head.weight)
    for transposed in (False, True):
        monkeypatch.setitem(k._faster_layout, (rows, 300, 64, torch.get_num_threads()), transposed)
        with torch.no_grad():
            torch.testing.assert_close(head(x), want, atol=1e-6, rtol=1e-6)


def test_the_model_cache_is_growing_only_where_it_replaces_a_fresh_dynamic_cache(restore_paths):
    config = GPTLiteConfig.from_preset("tiny")
    k.set_fast_paths("all")
    assert type(k.default_cache(config)) is k.GrowingCache
    assert type(k.default_cache(config, DynamicCache(config=config))) is k.GrowingCache
    static = StaticCache(config=config, max_cache_len=16)
    assert k.default_cache(config, static) is static
    mine = DynamicCache(config=config)
    mine._is_user_defined = True  # what generate() marks a cache passed by the caller with
    assert k.default_cache(config, mine) is mine
    k.set_fast_paths("none")
    assert type(k.default_cache(config)) is DynamicCache


def test_fast_paths_on_and_off_generate_the_same_tokens(restore_paths):
    torch.manual_seed(0)
    model = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny")).eval()
    x = torch.randint(3, 512, (4, 5))
    runs = {}
    for paths in ("all", "none"):
        k.set_fast_paths(paths)
        with torch.no_grad():
            runs[paths] = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=20, do_sample=False)
    assert torch.equal(runs["all"], runs["none"])
