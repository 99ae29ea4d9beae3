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


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("new_vocab, pad_multiple", [(400, None), (200, None), (400, 64)])
def test_resize_token_embeddings_keeps_the_output_layer(tie, new_vocab, pad_multiple, tmp_path, monkeypatch,
                                                        restore_paths):
    """transformers' resize builds a plain nn.Linear head (untied weights); set_output_embeddings keeps it an
    OutputLayer: the same logits, tied iff configured, an exact save/load round trip, the head fast path still taken."""
    torch.manual_seed(0)
    config = GPTLiteConfig.from_preset("tiny", vocab_size=320, tie_word_embeddings=tie,
                                       pad_vocab_size_multiple=pad_multiple)
    model = GPTLiteForCausalLM(config).eval()
    model.resize_token_embeddings(new_vocab, mean_resizing=False)
    head, wte = model.lm_head, model.transformer.wte
    assert type(head) is k.OutputLayer and not head.training
    assert head.weight.shape == wte.weight.shape == (model.config.padded_vocab_size, 64)
    assert model.config.vocab_size == new_vocab and head.out_features == model.config.padded_vocab_size
    assert (head.weight is wte.weight) == tie

    x = torch.randint(3, new_vocab, (4, 6))
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
    want = F.linear(out.hidden_states[-1], head.weight)[..., :new_vocab]
    torch.testing.assert_close(out.logits, want, atol=1e-6, rtol=1e-6)

    model.save_pretrained(tmp_path)
    loaded = GPTLiteForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded.lm_head) is k.OutputLayer and (loaded.lm_head.weight is loaded.transformer.wte.weight) == tie
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[n]) for n, v in loaded.state_dict().items())

    taken = []  # the head's layout choice is made (so its fast path runs) on each few-row decoding step
    monkeypatch.setattr(k, "_transposed_is_faster", lambda weight, x: taken.append(x.shape[0]) or True)
    runs = {}
    for paths in ("all", "none"):
        k.set_fast_paths(paths)
        with torch.no_grad():
            runs[paths] = loaded.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=8, do_sample=False,
                                          pad_token_id=2)
    assert torch.equal(runs["all"], runs["none"]) and taken and set(taken) == {4}
