"""GGUF export: the split is GPT-2's regex, GGUFReader reads back every tensor and the tokenizer, transformers'
GGUF loader gives our logits, and what llama.cpp's GPT-2 graph cannot run is refused in one line."""

import numpy as np
import pytest
import torch
from export_helpers import novels_head, novels_tokenizer_fixture, tiny_causal_lm, tiny_dir_fixture  # noqa: F401

gguf = pytest.importorskip(
    "gguf", reason="the gguf package is not installed (pip install 'hf_gptlite[export]')"
)

from hf_gptlite.export.gguf import GGUFExportError, export_gguf, gguf_tensors  # noqa: E402

# OpenAI's GPT-2 pattern (encoder.py), which llama.cpp's "gpt-2" pre-tokenizer implements
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
TRICKY = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ ✅ 🦙🦙 3 33 333 3333 3.3 3..3 "
    "?我想在apple工作1314151天～ ------======= нещо ''''```\"\"\"\"......!!!!!!?????? I've been 'told he's "
    "there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL  trailing   \n"
)


def test_our_byte_level_split_is_gpt2s_regex(novels_tokenizer):
    """The pre-tokenizer's pieces (by their character offsets) are exactly regex.findall of GPT-2's pattern."""
    regex = pytest.importorskip("regex")
    split = novels_tokenizer.backend_tokenizer.pre_tokenizer
    for text in [*novels_head(), TRICKY]:
        ours = [text[start:end] for _, (start, end) in split.pre_tokenize_str(text)]
        assert ours == regex.findall(GPT2_PATTERN, text)


@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0"])
def test_gguf_reader_reads_back_every_tensor_and_the_tokenizer(tiny_dir, novels_tokenizer, tmp_path, dtype):
    from hf_gptlite import GPTLiteForCausalLM

    model = GPTLiteForCausalLM.from_pretrained(tiny_dir).eval()
    path = export_gguf(model, novels_tokenizer, tmp_path / f"m-{dtype}.gguf", dtype=dtype)
    reader = gguf.GGUFReader(path)
    expected = gguf_tensors(model)
    assert sorted(t.name for t in reader.tensors) == sorted(expected)
    for t in reader.tensors:
        want = expected[t.name].numpy()
        assert tuple(int(d) for d in reversed(t.shape)) == want.shape, t.name  # GGUF lists dims fastest first
        got = gguf.dequantize(t.data, t.tensor_type).reshape(want.shape)
        if t.tensor_type == gguf.GGMLQuantizationType.F32:
            np.testing.assert_array_equal(got, want, err_msg=t.name)
        else:  # f16: relative 2^-11; q8_0: each block of 32 at 1/127 of its largest value (and the f16 scale)
            assert t.name != "position_embd.weight" and want.ndim == 2
            tol = 1e-3 if dtype == "f16" else 0.01
            assert np.abs(got - want).max() <= tol * np.abs(want).max(), t.name
    assert {
        t.tensor_type.name for t in reader.tensors if len(t.shape) == 2 and t.name != "position_embd.weight"
    } == {dtype.upper()}
    assert (
        "blk.0.attn_qkv.weight" in expected and "output.weight" not in expected
    )  # tied head: reused by llama.cpp

    def field(key):
        f = reader.fields[key]
        values = [f.contents(i) for i in range(len(f.data))] if len(f.data) > 1 else f.contents()
        return values

    vocab = novels_tokenizer.get_vocab()
    tokens = field("tokenizer.ggml.tokens")
    assert len(tokens) == len(vocab) == model.config.vocab_size
    assert all(vocab[t] == i for i, t in enumerate(tokens))
    types = field("tokenizer.ggml.token_type")
    assert types[:3] == [gguf.TokenType.CONTROL] * 3 and set(types[3:]) == {gguf.TokenType.NORMAL}
    spec_merges = novels_tokenizer.backend_tokenizer.to_str()
    merges = field("tokenizer.ggml.merges")
    assert (
        len(merges) == len(vocab) - 256 - 3
        and f'["{merges[0].split()[0]}","{merges[0].split()[1]}"]' in spec_merges
    )
    assert field("general.architecture") == "gpt2" and field("tokenizer.ggml.model") == "gpt2"
    assert field("tokenizer.ggml.pre") == "gpt-2"
    assert (
        field("tokenizer.ggml.bos_token_id"),
        field("tokenizer.ggml.eos_token_id"),
        field("tokenizer.ggml.padding_token_id"),
    ) == (0, 1, 2)
    assert field("tokenizer.ggml.add_bos_token") is False and field("tokenizer.ggml.add_eos_token") is False
    c = model.config
    assert (
        field("gpt2.context_length"),
        field("gpt2.embedding_length"),
        field("gpt2.feed_forward_length"),
        field("gpt2.block_count"),
        field("gpt2.attention.head_count"),
    ) == (
        c.max_position_embeddings,
        c.hidden_size,
        c.intermediate_size,
        c.num_hidden_layers,
        c.num_attention_heads,
    )
    assert field("gpt2.attention.layer_norm_epsilon") == pytest.approx(c.layer_norm_eps)


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_transformers_gguf_loader_gives_our_logits_and_token_ids(tiny_dir):
    """from_pretrained(folder, gguf_file=...) -> GPT2LMHeadModel, logits within 1e-4 of ours; its tokenizer gives our
    ids (with split_special_tokens=True: GGUF does not store that flag)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ours = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    export_gguf(ours, AutoTokenizer.from_pretrained(tiny_dir), tiny_dir / "model.gguf", overwrite=True)
    theirs = AutoModelForCausalLM.from_pretrained(tiny_dir, gguf_file="model.gguf").eval()
    assert type(theirs).__name__ == "GPT2LMHeadModel"
    torch.manual_seed(0)
    ids = torch.randint(0, ours.config.vocab_size, (2, 40))
    assert (_logits(theirs, ids) - _logits(ours, ids)).abs().max() < 1e-4
    tok, their_tok = (
        AutoTokenizer.from_pretrained(tiny_dir),
        AutoTokenizer.from_pretrained(tiny_dir, gguf_file="model.gguf"),
    )
    for text in [novels_head(300)[0], TRICKY + " [EOS] texto"]:
        assert their_tok(text, split_special_tokens=True)["input_ids"] == tok(text)["input_ids"]


VARIANTS = {
    "untied head": dict(tie_word_embeddings=False),
    "padded vocab": dict(pad_vocab_size_multiple=96),
    "3x MLP": dict(intermediate_size=192),
    "no qkv bias": dict(qkv_bias=False),
    "context 96": dict(max_position_embeddings=96),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_configs_beyond_gpt2s_defaults_export_exactly(novels_tokenizer, tmp_path, variant):
    """Each config llama.cpp's GPT-2 graph reads differently is written so the file computes our logits: checked
    by rebuilding a GPT-2 from the file's own metadata and tensors (transformers' GGUF reader ignores
    feed_forward_length, context_length and an untied head for gpt2, so its config is built here)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = tiny_causal_lm(novels_tokenizer, **VARIANTS[variant])
    if variant == "padded vocab":
        assert model.transformer.wte.weight.shape[0] == 576  # 512 real rows + 64 padding rows
    path = export_gguf(model, novels_tokenizer, tmp_path / "m.gguf")
    reader = gguf.GGUFReader(path)
    f = {
        k: reader.fields[k].contents()
        for k in reader.fields
        if not k.startswith("tokenizer.ggml.") or "_id" in k
    }
    tensors = {
        t.name: torch.from_numpy(np.array(t.data).reshape(tuple(reversed([int(d) for d in t.shape]))).copy())
        for t in reader.tensors
    }
    n_vocab = tensors["token_embd.weight"].shape[0]
    assert n_vocab == model.config.vocab_size
    untied = "output.weight" in tensors
    assert untied == (variant == "untied head")
    g = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=n_vocab,
            n_positions=f["gpt2.context_length"],
            n_embd=f["gpt2.embedding_length"],
            n_layer=f["gpt2.block_count"],
            n_head=f["gpt2.attention.head_count"],
            n_inner=f["gpt2.feed_forward_length"],
            layer_norm_epsilon=f["gpt2.attention.layer_norm_epsilon"],
            tie_word_embeddings=not untied,
            activation_function="gelu_new",
            resid_pdrop=0,
            embd_pdrop=0,
            attn_pdrop=0,
        )
    ).eval()
    state = {
        "transformer.wte.weight": tensors["token_embd.weight"],
        "transformer.wpe.weight": tensors["position_embd.weight"],
        "transformer.ln_f.weight": tensors["output_norm.weight"],
        "transformer.ln_f.bias": tensors["output_norm.bias"],
    }
    if untied:
        state["lm_head.weight"] = tensors["output.weight"]
    names = {
        "ln_1": "attn_norm",
        "attn.c_attn": "attn_qkv",
        "attn.c_proj": "attn_output",
        "ln_2": "ffn_norm",
        "mlp.c_fc": "ffn_up",
        "mlp.c_proj": "ffn_down",
    }
    for i in range(f["gpt2.block_count"]):
        for ours, theirs in names.items():
            w = tensors[f"blk.{i}.{theirs}.weight"]
            state[f"transformer.h.{i}.{ours}.weight"] = (
                w.T.contiguous() if w.ndim == 2 else w
            )  # Conv1D: (in, out)
            state[f"transformer.h.{i}.{ours}.bias"] = tensors[f"blk.{i}.{theirs}.bias"]
    missing, unexpected = g.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    g.tie_weights()
    ids = torch.randint(0, n_vocab, (2, 40), generator=torch.Generator().manual_seed(0))
    assert (_logits(g, ids) - _logits(model, ids)).abs().max() < 1e-4


def test_refusals_are_one_line_before_anything_is_written(novels_tokenizer, tmp_path):
    from tokenizers import normalizers, pre_tokenizers

    from hf_gptlite import GPTLiteConfig, GPTLiteForSequenceClassification
    from hf_gptlite.errors import OutputInTheWayError

    model = tiny_causal_lm(novels_tokenizer)
    out = tmp_path / "m.gguf"
    clf = GPTLiteForSequenceClassification(GPTLiteConfig.from_preset("tiny", vocab_size=512, num_labels=2))
    with pytest.raises(GGUFExportError, match="takes a GPTLiteForCausalLM"):
        export_gguf(clf, novels_tokenizer, out)
    small = tiny_causal_lm(novels_tokenizer, vocab_size=500)
    with pytest.raises(GGUFExportError, match="ids up to 511 but the model has 500"):
        export_gguf(small, novels_tokenizer, out)
    odd = novels_tokenizer.__class__(
        tokenizer_object=novels_tokenizer.backend_tokenizer.__class__.from_str(
            novels_tokenizer.backend_tokenizer.to_str()
        )
    )
    odd.backend_tokenizer.normalizer = normalizers.NFKC()
    with pytest.raises(GGUFExportError, match="normalizer"):
        export_gguf(model, odd, out)
    odd.backend_tokenizer.normalizer = None
    odd.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    with pytest.raises(GGUFExportError, match="prefix space"):
        export_gguf(model, odd, out)
    odd.backend_tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(GGUFExportError, match="not ByteLevel"):
        export_gguf(model, odd, out)
    assert not out.exists() and not list(tmp_path.iterdir())
    out.write_bytes(b"mine")
    with pytest.raises(OutputInTheWayError, match="exists"):
        export_gguf(model, novels_tokenizer, out)
    assert out.read_bytes() == b"mine"


def test_add_bos_is_written(tmp_path):
    from hf_gptlite.tokenization import train_bpe_tokenizer

    tok = train_bpe_tokenizer(
        novels_head(3000), vocab_size=300, add_bos=True, add_eos=True, show_progress=False
    )
    path = export_gguf(tiny_causal_lm(tok), tok, tmp_path / "m.gguf")
    fields = gguf.GGUFReader(path).fields
    assert fields["tokenizer.ggml.add_bos_token"].contents() is True
    assert fields["tokenizer.ggml.add_eos_token"].contents() is True


def test_export_gguf_command(tiny_dir, tmp_path, capsys):
    """`python -m hf_gptlite export_gguf` (its in-process entry point) writes the file once; a second run, or a
    missing model folder, is refused in one `error:` line with exit status 2 and writes nothing."""
    from hf_gptlite import cli

    args = [
        "export_gguf",
        "--model_dir",
        str(tiny_dir),
        "--outfile",
        str(tmp_path / "m.gguf"),
        "--dtype",
        "q8_0",
    ]
    assert cli.main(args) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "m.gguf").stat().st_size > 0
    before = (tmp_path / "m.gguf").read_bytes()
    assert cli.main(args) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: outfile {str(tmp_path / 'm.gguf')!r} exists; remove it or pass --overwrite true"
    ]
    assert (tmp_path / "m.gguf").read_bytes() == before
    assert cli.main([*args[:2], str(tmp_path / "nope"), args[3], str(tmp_path / "x.gguf")]) == 2
    assert capsys.readouterr().err.startswith("error: model folder") and not (tmp_path / "x.gguf").exists()
