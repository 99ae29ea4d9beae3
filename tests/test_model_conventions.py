"""The model follows transformers' conventions (issue #14): config defaults for the output flags, the `cache`
rename, torch.compile with a static cache, logits_to_keep, resize with vocabulary padding, gradient checkpointing
while generating, output_attentions with sdpa, position embeddings on another device."""

import warnings

import pytest
import torch
import transformers
from conftest import random_gpt2
from packaging import version
from transformers import AutoModelForCausalLM, StaticCache
from transformers.integrations import sdpa_attention
from transformers.utils import generic

from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM, GPTLiteModel

# deprecate_kwarg warns until the version it names (the one transformers' own models use), then renames silently
WARNS_PAST_KEY_VALUES = version.parse(transformers.__version__) < version.parse("5.40.0")


def _tiny(**overrides):
    torch.manual_seed(0)
    cfg = dict(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               max_position_embeddings=32, hidden_dropout_prob=0.0, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    model = GPTLiteForCausalLM(GPTLiteConfig(**{**cfg, **overrides})).eval()
    with torch.no_grad():  # larger weights: greedy tokens vary, so comparing them means something
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(4.0)
    return model


def _record_warning_once(monkeypatch, logger):
    messages = []
    monkeypatch.setattr(logger, "warning_once", lambda msg, *a, **k: messages.append(msg))
    return messages


# ---- output flags: from_pretrained kwargs and config attributes, as for any transformers model --------------------
def test_output_flags_default_to_the_config(tmp_path):
    gpt2 = random_gpt2()
    GPTLiteForCausalLM.from_gpt2(gpt2).save_pretrained(tmp_path)
    x = torch.randint(3, 320, (2, 9))
    with torch.no_grad():
        expected = gpt2(x, output_hidden_states=True, output_attentions=True)
        model = AutoModelForCausalLM.from_pretrained(tmp_path, output_hidden_states=True).eval()
        out = model(x)
        assert len(out.hidden_states) == 3 and out.attentions is None
        for got, want in zip(out.hidden_states, expected.hidden_states):  # inputs of each block, final LN output
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)

        model = AutoModelForCausalLM.from_pretrained(tmp_path, output_attentions=True).eval()
        assert model.config._attn_implementation == "eager"  # transformers picks eager for output_attentions
        out = model(x)
        assert out.hidden_states is None and len(out.attentions) == 2
        for got, want in zip(out.attentions, expected.attentions):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        model.config.output_attentions = False
        assert model(x).attentions is None
        assert len(model(x, output_attentions=True).attentions) == 2  # an argument overrides the config

        base = GPTLiteModel.from_pretrained(tmp_path, output_hidden_states=True)
        assert len(base(x).hidden_states) == 3


def test_return_dict_false_gives_tuples():
    model = _tiny()
    x = torch.randint(3, 96, (1, 5))
    with torch.no_grad():
        reference = model(x, labels=x)
        as_tuple = model(x, labels=x, return_dict=False)
        assert isinstance(as_tuple, tuple)
        torch.testing.assert_close(as_tuple[0], reference.loss)
        torch.testing.assert_close(as_tuple[1], reference.logits)
        model.config.return_dict = False
        from_config = model(x)
        assert isinstance(from_config, tuple)
        torch.testing.assert_close(from_config[0], reference.logits)
        assert isinstance(model.transformer(x), tuple)
        assert not isinstance(model(x, return_dict=True), tuple)


# ---- past_key_values= -> cache= ------------------------------------------------------------------------------------
def test_past_key_values_warns_and_still_works():
    model = _tiny()
    x = torch.randint(3, 96, (2, 12))
    with torch.no_grad():
        full = model(x).logits
        first = model(x[:, :8], use_cache=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rest = model(x[:, 8:], past_key_values=first.cache, use_cache=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    if WARNS_PAST_KEY_VALUES:
        assert len(messages) == 1 and "`past_key_values` is deprecated" in messages[0] and "`cache`" in messages[0]
    torch.testing.assert_close(torch.cat([first.logits, rest.logits], 1), full, atol=1e-5, rtol=1e-5)
    assert rest.cache is first.cache and rest.cache.get_seq_length() == 12
    assert rest.past_key_values is rest.cache  # transformers' read-only alias on outputs


def test_generate_does_not_warn():
    model = _tiny()
    prompt = torch.randint(3, 96, (2, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        for kw in (dict(), dict(cache_implementation="static"), dict(num_beams=2), dict(do_sample=True)):
            model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4, **kw)


# transformers' GenerationTesterMixin is not in its sdist (see test_transformers_common.py): the decoding strategies
# it exercises are checked here against GPT2LMHeadModel instead, on a left-padded batch.
@pytest.mark.parametrize(
    "strategy",
    [dict(), dict(num_beams=3), dict(cache_implementation="static"), dict(num_beams=2, cache_implementation="static"),
     dict(do_sample=True, num_return_sequences=2), dict(use_cache=False), dict(inputs_embeds=True)],
    ids=["greedy", "beam", "static-cache", "beam-static-cache", "sample", "no-cache", "inputs-embeds"],
)
def test_decoding_strategies_match_gpt2(strategy):
    gpt2 = random_gpt2()
    model = GPTLiteForCausalLM.from_gpt2(gpt2).eval()
    ids = torch.randint(3, 320, (2, 7))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    kw = dict(attention_mask=mask, max_new_tokens=6, min_new_tokens=6, pad_token_id=2)
    results = []
    for m in (gpt2, model):
        torch.manual_seed(1)
        if strategy.get("inputs_embeds"):
            results.append(m.generate(inputs_embeds=m.get_input_embeddings()(ids), **kw))
        else:
            results.append(m.generate(ids, **kw, **strategy))
    assert torch.equal(results[1], results[0])


def test_generate_dict_outputs_and_continuing_from_the_cache():
    gpt2 = random_gpt2()
    model = GPTLiteForCausalLM.from_gpt2(gpt2).eval()
    for m in (gpt2, model):
        m.set_attn_implementation("eager")
    ids = torch.randint(3, 320, (2, 5))
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=4, min_new_tokens=4, pad_token_id=2,
              return_dict_in_generate=True, output_scores=True, output_logits=True, output_hidden_states=True,
              output_attentions=True)
    want, got = gpt2.generate(ids, **kw), model.generate(ids, **kw)
    assert torch.equal(got.sequences, want.sequences)
    for name in ("scores", "logits", "hidden_states", "attentions"):  # per step, then per layer
        for step_got, step_want in zip(getattr(got, name), getattr(want, name), strict=True):
            torch.testing.assert_close(step_got, step_want, atol=1e-4, rtol=1e-4)
    more = model.generate(got.sequences, attention_mask=torch.ones_like(got.sequences), cache=got.cache,
                          max_new_tokens=3, min_new_tokens=3, pad_token_id=2)
    at_once = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=7, min_new_tokens=7,
                             pad_token_id=2)
    assert torch.equal(more, at_once)


# ---- torch.compile(fullgraph=True) of a decoding step with a static cache --------------------------------------
def _greedy_with_static_cache(model, step, prompt, new_tokens):
    cache = StaticCache(config=model.config, max_cache_len=prompt.shape[1] + new_tokens)
    with torch.no_grad():
        token = model(prompt, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)  # prefill: eager
        tokens = [token]
        for _ in range(new_tokens - 1):
            token = step(input_ids=token, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
            tokens.append(token)
    return torch.cat(tokens, 1)


def test_static_cache_decoding_step_compiles_without_graph_break():
    model = _tiny()
    prompt = torch.randint(3, 96, (2, 5))
    eager = _greedy_with_static_cache(model, model.forward, prompt, 8)
    assert len(set(eager.flatten().tolist())) >= 4

    cache = StaticCache(config=model.config, max_cache_len=8)
    with torch.no_grad():
        model(prompt, cache=cache, use_cache=True)
        explained = torch._dynamo.explain(model.forward)(input_ids=prompt[:, :1], cache=cache, use_cache=True)
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons

    # fullgraph=True raises at the first graph break. aot_eager traces what inductor would compile but skips code
    # generation (inductor: ~18 s on a 2-core CPU, same tokens).
    torch._dynamo.reset()
    compiled = torch.compile(model.forward, fullgraph=True, backend="aot_eager")
    assert torch.equal(_greedy_with_static_cache(model, compiled, prompt, 8), eager)


def test_too_long_input_still_raises_with_a_static_cache():
    model = _tiny()
    with pytest.raises(ValueError, match="max_position_embeddings=32"):
        model(torch.zeros(1, 33, dtype=torch.long), cache=StaticCache(config=model.config, max_cache_len=40))


# ---- logits_to_keep: transformers' convention (slice_logits_to_keep), as in GPT2LMHeadModel -----------------------
@pytest.mark.parametrize(
    "keep",
    [0, 1, 3, torch.tensor([0, 4, 8]), torch.tensor([[1, 5], [2, 8]]),
     torch.tensor([[True, False] * 5, [False, True, True] + [False] * 7])],
    ids=["int0", "int1", "int3", "1d", "2d-positions", "bool-mask"],
)
@pytest.mark.parametrize("pad_multiple", [None, 128])
def test_logits_to_keep_matches_gpt2(keep, pad_multiple):
    gpt2 = random_gpt2()
    model = GPTLiteForCausalLM.from_gpt2(gpt2).eval()
    if pad_multiple:
        model.config.pad_vocab_size_multiple = pad_multiple
        model.resize_token_embeddings(320)  # 384 rows, logits still 320 columns: the same function
    x = torch.randint(3, 320, (2, 10))
    with torch.no_grad():
        expected, got = gpt2(x, logits_to_keep=keep).logits, model(x, logits_to_keep=keep).logits
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# ---- resize_token_embeddings with pad_vocab_size_multiple ----------------------------------------------------------
@pytest.mark.parametrize("tie", [True, False])
def test_resize_with_vocab_padding_roundtrips(tmp_path, tie):
    torch.manual_seed(0)
    model = GPTLiteForCausalLM(GPTLiteConfig.from_preset(
        "tiny", vocab_size=301, pad_vocab_size_multiple=64, tie_word_embeddings=tie, hidden_dropout_prob=0.0)).eval()
    before = model.transformer.wte.weight[:301].clone()
    model.resize_token_embeddings(503)
    assert model.config.vocab_size == 503 and model.config.padded_vocab_size == 512
    assert model.transformer.wte.weight.shape[0] == model.lm_head.weight.shape[0] == 512
    assert torch.equal(model.transformer.wte.weight[:301], before)
    x = torch.tensor([[502, 3, 300, 7]])
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert (loaded.config.vocab_size, loaded.transformer.wte.weight.shape[0]) == (503, 512)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        assert model(x).logits.shape == (1, 4, 503)
        assert torch.equal(model(x).logits, loaded(x).logits)
    with pytest.raises(ValueError, match="pad_vocab_size_multiple=64"):
        model.resize_token_embeddings(600, pad_to_multiple_of=128)


# ---- gradient checkpointing: the cache goes only where there are gradients ------------------------------------------
def test_gradient_checkpointing_keeps_the_cache_without_gradients(monkeypatch):
    model = _tiny()
    prompt = torch.randint(3, 96, (2, 5))
    kw = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=12, min_new_tokens=12, do_sample=False)
    expected = model.generate(prompt, **kw)
    assert len(set(expected[:, 5:].flatten().tolist())) >= 4
    model.activation_checkpointing_enable()
    model.train()  # generating in the middle of training (dropout is 0 here)
    warned = _record_warning_once(monkeypatch, generic.logger)
    assert torch.equal(model.generate(prompt, **kw), expected)
    with torch.no_grad():
        assert model(prompt, use_cache=True).cache.get_seq_length() == 5
    assert warned == []

    out = model(prompt, labels=prompt, use_cache=True)  # with gradients: checkpointing wins, as in transformers
    assert out.cache is None and any("gradient checkpointing" in m for m in warned)
    out.loss.backward()


# ---- output_attentions with sdpa: transformers warns and returns no weights ------------------------------------------
def test_output_attentions_with_sdpa_warns_like_transformers(monkeypatch):
    model = _tiny()
    model.set_attn_implementation("sdpa")
    warned = _record_warning_once(monkeypatch, sdpa_attention.logger)
    x = torch.randint(3, 96, (1, 6))
    with torch.no_grad():
        out = model(x, output_attentions=True)
    assert out.attentions == () and any("does not support `output_attentions=True`" in m for m in warned)
    with pytest.raises(ValueError, match="output_attentions"):  # the config refuses it outright with sdpa
        model.config.output_attentions = True
    model.set_attn_implementation("eager")
    with torch.no_grad():
        assert len(model(x, output_attentions=True).attentions) == 2


# ---- device_map: position embeddings join the token embeddings' device ---------------------------------------------
def test_position_embeddings_are_moved_to_the_input_device():
    """With a device_map, wpe may sit on another device than wte (GPT-2: position_embeds.to(inputs_embeds.device)).
    On one CPU this is simulated: wpe returns an object that is only usable after .to(device)."""
    model = _tiny()
    x = torch.randint(3, 96, (2, 6))
    with torch.no_grad():
        expected = model(x).logits
    moved = []

    class Elsewhere:
        def __init__(self, tensor):
            self.tensor = tensor

        def to(self, device):
            moved.append(device)
            return self.tensor

    model.transformer.wpe.register_forward_hook(lambda module, args, out: Elsewhere(out))
    with torch.no_grad():
        assert torch.equal(model(x).logits, expected)
    assert moved == [x.device]
