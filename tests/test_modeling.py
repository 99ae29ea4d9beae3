"""Core model: config validation, GPT-2 parity, generation, caching, padding, classification, save/load."""

import json
import os
import textwrap

import pytest
import torch
from conftest import random_gpt2, run_without_hf_gptlite
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    pipeline,
)

from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM, GPTLiteForSequenceClassification, GPTLiteModel
from hf_gptlite.gptlite_kernels import GrowingCache

GPT2_SHAPES = [
    dict(),  # tied, 2 layers, 64 wide
    dict(n_embd=96, n_layer=3, n_head=6, n_inner=200, tie_word_embeddings=False),
    dict(n_embd=32, n_layer=1, n_head=1, vocab_size=101, n_positions=70),
]


# ---- config ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "preset, n_params",
    [("gpt2-small", 124_439_808), ("gpt2-medium", 354_823_168), ("gpt2-large", 774_030_080),
     ("gpt2-xl", 1_557_611_200)],
)
def test_preset_parameter_counts_match_gpt2(preset, n_params):
    with torch.device("meta"):
        model = GPTLiteForCausalLM(GPTLiteConfig.from_preset(preset))
    assert sum(p.numel() for p in model.parameters()) == n_params


def test_book_aliases_and_roundtrip(tmp_path):
    cfg = GPTLiteConfig(emb_dim=96, n_heads=3, n_layers=5, context_length=77, drop_rate=0.2, vocab_size=400)
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.num_hidden_layers) == (96, 3, 5)
    assert (cfg.max_position_embeddings, cfg.hidden_dropout_prob, cfg.intermediate_size) == (77, 0.2, 384)
    assert cfg.emb_dim == 96 and cfg.context_length == 77
    cfg.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "gptlite" and saved["hidden_size"] == 96 and "emb_dim" not in saved
    again = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(again, GPTLiteConfig)
    assert {k: v for k, v in again.to_dict().items() if k != "_name_or_path"} == {
        k: v for k, v in cfg.to_dict().items() if k != "_name_or_path"}


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(hidden_size=100, num_attention_heads=3), "hidden_size"),
        (dict(num_hidden_layers=0), "num_hidden_layers"),
        (dict(vocab_size=-5), "vocab_size"),
        (dict(hidden_dropout_prob=1.0), "hidden_dropout_prob"),
        (dict(attention_probs_dropout_prob=-0.1), "attention_probs_dropout_prob"),
        (dict(vocab_size=10, pad_token_id=10), "pad_token_id"),
        (dict(emb_dim=0), "hidden_size"),
    ],
)
def test_invalid_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        GPTLiteConfig(**kwargs)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        GPTLiteConfig.from_preset("gpt5")


# ---- GPT-2 parity ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", GPT2_SHAPES)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_from_gpt2_logits_match(shape, attn):
    gpt2 = random_gpt2(**shape)
    ours = GPTLiteForCausalLM.from_gpt2(gpt2).eval()
    gpt2.set_attn_implementation(attn)
    ours.set_attn_implementation(attn)
    x = torch.randint(0, gpt2.config.vocab_size, (3, 40))
    with torch.no_grad():
        expected, got = gpt2(x).logits, ours(x).logits
    assert expected.abs().max() > 1.0  # the scaled weights give non-trivial logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", GPT2_SHAPES)
def test_to_gpt2_roundtrips_exactly(shape):
    gpt2 = random_gpt2(**shape)
    back = GPTLiteForCausalLM.from_gpt2(gpt2).to_gpt2()
    ref, got = gpt2.state_dict(), back.state_dict()
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    assert back.config.tie_word_embeddings == gpt2.config.tie_word_embeddings


def test_to_gpt2_from_native_model_without_qkv_bias():
    torch.manual_seed(0)
    ours = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny", qkv_bias=False, hidden_dropout_prob=0.0)).eval()
    x = torch.randint(0, 512, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(ours.to_gpt2().eval()(x).logits, ours(x).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", GPT2_SHAPES[:2])
def test_greedy_generation_matches_gpt2(shape):
    gpt2 = random_gpt2(**shape)
    ours = GPTLiteForCausalLM.from_gpt2(gpt2).eval()
    prompt = torch.randint(3, gpt2.config.vocab_size, (3, 6))
    kw = dict(max_new_tokens=50, min_new_tokens=50, do_sample=False, pad_token_id=2,
              attention_mask=torch.ones_like(prompt))
    expected = gpt2.generate(prompt, **kw)
    got = ours.generate(prompt, **kw)
    assert got.shape == (3, 56)
    assert len(set(got[:, 6:].flatten().tolist())) >= 10  # a model repeating one token would prove nothing
    assert torch.equal(got, expected)


def test_generation_with_and_without_cache_is_identical():
    ours = GPTLiteForCausalLM.from_gpt2(random_gpt2(seed=3, **GPT2_SHAPES[1])).eval()
    prompt = torch.randint(3, 320, (2, 7))
    kw = dict(max_new_tokens=40, min_new_tokens=40, do_sample=False, pad_token_id=2)
    kw["attention_mask"] = torch.ones_like(prompt)
    cached = ours.generate(prompt, use_cache=True, **kw)
    uncached = ours.generate(prompt, use_cache=False, **kw)
    assert len(set(cached[:, 7:].flatten().tolist())) >= 10
    assert torch.equal(cached, uncached)


def test_cached_forward_equals_full_forward():
    ours = GPTLiteForCausalLM.from_gpt2(random_gpt2(seed=4)).eval()
    x = torch.randint(3, 320, (2, 30))
    with torch.no_grad():
        full = ours(x).logits
        first = ours(x[:, :20], use_cache=True)
        rest = ours(x[:, 20:], cache=first.cache, use_cache=True)
    torch.testing.assert_close(torch.cat([first.logits, rest.logits], 1), full, atol=1e-5, rtol=1e-5)


def test_cache_grows_in_place_and_holds_what_concatenation_would():
    """GrowingLayer (gptlite_kernels): a cache layer's keys/values are views of a buffer with room (no copy of the
    cached positions per step); across a regrowth (> 256 positions), a crop and a reorder it holds what torch.cat
    would."""

    torch.manual_seed(0)
    ours = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny", max_position_embeddings=400)).eval()
    x = torch.randint(3, 512, (2, 300))
    with torch.no_grad():
        full = ours(x, use_cache=True)
        cache = GrowingCache(ours.config)
        logits = [ours(x[:, :5], cache=cache, use_cache=True).logits]
        layer = cache.layers[0]
        for t in range(5, 300):
            before = layer.keys.data_ptr()
            logits.append(ours(x[:, t:t + 1], cache=cache, use_cache=True).logits)
            assert t == 5 + 256 or layer.keys.data_ptr() == before  # a view of the same buffer, except one regrowth
        torch.testing.assert_close(torch.cat(logits, 1), full.logits, atol=1e-5, rtol=1e-5)
        for got, want in zip(cache.layers, full.cache.layers):
            torch.testing.assert_close(got.keys, want.keys)
            torch.testing.assert_close(got.values, want.values)
        cache.crop(-10)  # drop 10 positions, then write over them
        again = ours(x[:, 290:], cache=cache, use_cache=True).logits
        torch.testing.assert_close(again, full.logits[:, 290:], atol=1e-5, rtol=1e-5)
        cache.reorder_cache(torch.tensor([1, 0]))  # beam search: new tensors, so the next step takes a new buffer
        nxt = torch.randint(3, 512, (2, 1))
        step = ours(nxt, cache=cache, use_cache=True).logits
        want = ours(torch.cat([x.flip(0), nxt], 1)).logits[:, -1:]
        torch.testing.assert_close(step, want, atol=1e-5, rtol=1e-5)
        assert cache.get_seq_length() == 301


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_bf16_decoding_on_cpu_follows_the_full_forward(static):
    """A bf16 model on CPU: a GrowingCache keeps fp32 keys/values (the attention of a decoding step then runs in
    fp32), a StaticCache its bf16 ones (gptlite_sdpa: one_query_attention); either way the cached steps give the
    logits of a full forward, to bf16 precision."""
    from transformers import StaticCache

    torch.manual_seed(0)
    ours = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny")).eval().to(torch.bfloat16)
    x = torch.randint(3, 512, (2, 40))
    with torch.no_grad():
        full = ours(x).logits.float()
        cache = StaticCache(config=ours.config, max_cache_len=40) if static else GrowingCache(ours.config)
        steps = [ours(x[:, :8], cache=cache, use_cache=True).logits]
        steps += [ours(x[:, t:t + 1], cache=cache, use_cache=True).logits for t in range(8, 40)]
    assert cache.layers[0].keys.dtype == (torch.bfloat16 if static else torch.float32)
    torch.testing.assert_close(torch.cat(steps, 1).float(), full, atol=0.05, rtol=0.05)
    with torch.no_grad():
        ours.set_attn_implementation("eager")  # any attention function gets q, k, v in one dtype
        eager = ours(x[:, :8], cache=GrowingCache(ours.config), use_cache=True).logits.float()
    torch.testing.assert_close(eager, full[:, :8], atol=0.05, rtol=0.05)


def test_the_cache_keeps_the_dtype_of_keys_that_need_gradients():
    ours = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny")).to(torch.bfloat16)
    x = torch.randint(3, 512, (2, 6))
    out = ours(x, labels=x, cache=GrowingCache(ours.config), use_cache=True)
    assert out.cache.layers[0].keys.dtype == torch.bfloat16
    out.loss.backward()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_left_padded_batch_generation_equals_single_prompts(attn):
    ours = GPTLiteForCausalLM.from_gpt2(random_gpt2(seed=5)).eval()
    ours.set_attn_implementation(attn)
    prompts = [torch.randint(3, 320, (n,)) for n in (4, 9, 6)]
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), 2)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):], mask[i, width - len(p):] = p, 1
    kw = dict(max_new_tokens=25, min_new_tokens=25, do_sample=False, pad_token_id=2)
    batched = ours.generate(ids, attention_mask=mask, **kw)
    for i, p in enumerate(prompts):
        alone = ours.generate(p[None], **kw)
        assert torch.equal(batched[i, width:], alone[0, len(p):]), f"prompt {i}"


def test_too_long_input_raises():
    model = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny"))
    with pytest.raises(ValueError, match="max_position_embeddings=128"):
        model(torch.zeros(1, 129, dtype=torch.long))


# ---- training features ----------------------------------------------------------------------------
def test_labels_loss_ignores_minus_100_and_matches_manual():
    model = GPTLiteForCausalLM.from_gpt2(random_gpt2(scale=1.0))
    x = torch.randint(3, 320, (2, 12))
    labels = x.clone()
    labels[0, :5] = -100
    out = model(x, labels=labels)
    logits = out.logits[:, :-1].reshape(-1, 320)
    manual = torch.nn.functional.cross_entropy(logits, labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, manual)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("vocab, padded", [(320, 320), (300, 320), (3000, 3008)])  # padded: a strided logits view
def test_blockwise_loss_equals_transformers_causal_lm_loss(dtype, vocab, padded):
    """causal_lm_loss (the model's loss) vs transformers' ForCausalLMLoss: value and gradient, mean and
    num_items_in_batch, labels shifted inside or given shifted; blocks of rows smaller than the batch."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    from hf_gptlite.gptlite_kernels import causal_lm_loss

    torch.manual_seed(0)
    base = (torch.randn(3, 700, padded) * 4).to(dtype)
    labels = torch.randint(0, vocab, (3, 700))
    labels[0, :50] = -100
    for kw in (dict(), dict(num_items_in_batch=torch.tensor(1500)), dict(shift_labels=labels.roll(-1, 1))):
        results = []
        for loss_fn in (ForCausalLMLoss, causal_lm_loss):
            x = base.clone().requires_grad_(True)
            loss = loss_fn(x[..., :vocab], labels, vocab_size=vocab, **kw)
            results.append((loss, *torch.autograd.grad(loss, x)))
        (want, want_grad), (got, got_grad) = results
        assert got.dtype == torch.float32 and got_grad.dtype == dtype
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(got_grad, want_grad, atol=1e-7 if dtype == torch.float32 else 1e-6, rtol=1e-5)


def test_the_model_uses_the_blockwise_loss_unless_another_is_set():
    from hf_gptlite.gptlite_kernels import causal_lm_loss

    model = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny"))
    assert model.loss_function is causal_lm_loss
    x = torch.randint(3, 512, (2, 9))
    model.loss_function = lambda logits, labels, vocab_size, **kw: logits.sum() * 0 + 7.0
    assert model(x, labels=x).loss.item() == 7.0


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    cfg = GPTLiteConfig.from_preset("tiny", hidden_dropout_prob=0.0)
    a = GPTLiteForCausalLM(cfg).train()
    b = GPTLiteForCausalLM(cfg).train()
    b.load_state_dict(a.state_dict())
    b.activation_checkpointing_enable()
    x = torch.randint(0, 512, (2, 20))
    a(x, labels=x).loss.backward()
    b(x, labels=x).loss.backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)


def test_tied_and_untied_heads_and_resize():
    tied = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny"))
    assert tied.lm_head.weight.data_ptr() == tied.transformer.wte.weight.data_ptr()
    untied = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny", tie_word_embeddings=False))
    assert untied.lm_head.weight.data_ptr() != untied.transformer.wte.weight.data_ptr()
    tied.resize_token_embeddings(600)
    assert tied.lm_head.weight.shape == (600, 64) and tied.config.vocab_size == 600
    assert tied.lm_head.weight.data_ptr() == tied.transformer.wte.weight.data_ptr()
    assert tied(torch.tensor([[599, 3]])).logits.shape == (1, 2, 600)


# ---- classification -------------------------------------------------------------------------------
def _classifier(**kw):
    torch.manual_seed(0)
    cfg = GPTLiteConfig.from_preset("tiny", hidden_dropout_prob=0.0, **kw)
    return GPTLiteForSequenceClassification(cfg).eval()


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_classifier_left_and_right_padding_agree(pooling):
    model = _classifier(num_labels=3, classifier_pooling=pooling)
    seqs = [torch.randint(3, 512, (n,)) for n in (5, 11, 8)]
    width = 11
    left, right = torch.full((3, width), 2), torch.full((3, width), 2)
    lmask, rmask = torch.zeros_like(left), torch.zeros_like(right)
    for i, s in enumerate(seqs):
        left[i, width - len(s):], lmask[i, width - len(s):] = s, 1
        right[i, : len(s)], rmask[i, : len(s)] = s, 1
    with torch.no_grad():
        a = model(left, attention_mask=lmask).logits
        b = model(right, attention_mask=rmask).logits
        alone = torch.cat([model(s[None]).logits for s in seqs])
        no_mask = model(right).logits  # falls back to the pad id
    assert a.shape == (3, 3)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(no_mask, alone, atol=1e-5, rtol=1e-5)


def test_classifier_pooling_reads_the_head_where_it_says():
    model = _classifier(num_labels=2, classifier_pooling="mean")
    ids = torch.tensor([[7, 8, 9, 2, 2]])
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    with torch.no_grad():
        hidden = model.transformer(ids, attention_mask=mask).last_hidden_state  # (1, 5, H)
        mean = model(ids, attention_mask=mask).logits
        model.config.classifier_pooling = "last"
        last = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(mean, model.score(hidden[:, :3].mean(1)), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(last, model.score(hidden[:, 2]), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(mean, last)
    with pytest.raises(ValueError, match="classifier_pooling must be 'last' or 'mean', got 'max'"):
        GPTLiteConfig.from_preset("tiny", classifier_pooling="max")


def test_classifier_losses_follow_transformers_problem_types():
    x = torch.randint(3, 512, (4, 6))
    m = _classifier(num_labels=3)
    y = torch.tensor([0, 2, 1, 2])
    out = m(x, labels=y)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, y))
    assert m.config.problem_type == "single_label_classification"

    m = _classifier(num_labels=3)
    y = torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 1, 1], [0, 0, 0]])
    out = m(x, labels=y)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, y))
    assert m.config.problem_type == "multi_label_classification"

    m = _classifier(num_labels=1)
    y = torch.tensor([0.5, -1.0, 2.0, 0.0])
    out = m(x, labels=y)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), y))
    assert m.config.problem_type == "regression"


def test_classifier_from_causal_lm_checkpoint(tmp_path):
    lm = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny"))
    lm.save_pretrained(tmp_path)
    clf = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, num_labels=2, id2label={0: "ham", 1: "spam"}, label2id={"ham": 0, "spam": 1}
    )
    assert isinstance(clf, GPTLiteForSequenceClassification)
    assert torch.equal(clf.transformer.wte.weight, lm.transformer.wte.weight)
    assert clf.score.weight.shape == (2, 64) and clf.config.id2label == {0: "ham", 1: "spam"}


# ---- save / load / Auto / pipelines ---------------------------------------------------------------
def test_save_load_roundtrip_is_exact(tmp_path):
    model = GPTLiteForCausalLM.from_gpt2(random_gpt2(**GPT2_SHAPES[1])).eval()
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"model.safetensors", "config.json", "configuration_gptlite.py", "modeling_gptlite.py"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForCausalLM"] == "modeling_gptlite.GPTLiteForCausalLM"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, GPTLiteForCausalLM)
    for (k, v), v2 in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(v, v2), k
    x = torch.randint(0, 320, (2, 10))
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)
    assert isinstance(AutoModel.from_pretrained(tmp_path), GPTLiteModel)


def test_bfloat16_loading(tmp_path):
    GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny")).save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    out = model(torch.randint(0, 512, (1, 5)))
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits.float()).all()


def test_pipelines_on_saved_models(tmp_path, byte_tokenizer):
    vocab = len(byte_tokenizer)
    cfg = GPTLiteConfig.from_preset("tiny", vocab_size=vocab)
    lm_dir, clf_dir = tmp_path / "lm", tmp_path / "clf"
    GPTLiteForCausalLM(cfg).save_pretrained(lm_dir)
    byte_tokenizer.save_pretrained(lm_dir)
    gen = pipeline("text-generation", model=str(lm_dir))
    out = gen("O rato roeu", max_new_tokens=8, do_sample=False)
    assert out[0]["generated_text"].startswith("O rato roeu")

    cfg = GPTLiteConfig.from_preset("tiny", vocab_size=vocab, num_labels=2, id2label={0: "ham", 1: "spam"},
                                    label2id={"ham": 0, "spam": 1})
    GPTLiteForSequenceClassification(cfg).save_pretrained(clf_dir)
    byte_tokenizer.save_pretrained(clf_dir)
    clf = pipeline("text-classification", model=str(clf_dir))
    preds = clf(["WIN a FREE prize now", "see you at dinner"])
    assert [p["label"] in ("ham", "spam") for p in preds] == [True, True]
    assert all(0.0 <= p["score"] <= 1.0 for p in preds)




def test_trust_remote_code_load_without_the_package(tmp_path):
    model_dir = tmp_path / "remote_model"
    model = GPTLiteForCausalLM.from_gpt2(random_gpt2(seed=7)).eval()
    model.save_pretrained(model_dir)
    x = torch.randint(3, 320, (2, 9))
    with torch.no_grad():
        save_file({"x": x, "logits": model(x).logits.contiguous()}, tmp_path / "expected.safetensors")
    script = textwrap.dedent(
        f"""
        import torch
        try:
            import hf_gptlite
            raise SystemExit("blocker failed")
        except ImportError:
            pass
        from safetensors.torch import load_file, save_file
        from transformers import AutoModelForCausalLM
        m = AutoModelForCausalLM.from_pretrained({str(model_dir)!r}, trust_remote_code=True).eval()
        assert "hf_gptlite" not in sys.modules and type(m).__module__.startswith("transformers_modules"), type(m)
        x = load_file({str(tmp_path / "expected.safetensors")!r})["x"]
        with torch.no_grad():
            save_file({{"logits": m(x).logits.contiguous()}}, {str(tmp_path / "got.safetensors")!r})
        print("MODULE", type(m).__module__)
        """
    )
    proc = run_without_hf_gptlite(script, tmp_path)
    assert "MODULE transformers_modules" in proc.stdout
    expected = load_file(tmp_path / "expected.safetensors")["logits"]
    assert torch.equal(load_file(tmp_path / "got.safetensors")["logits"], expected)

