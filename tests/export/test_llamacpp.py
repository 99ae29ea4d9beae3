"""The GGUF file checked by llama.cpp itself (through llama-cpp-python, which builds llama.cpp from source: not in
the default install, so these tests skip without it): it loads our file, tokenizes the novels into exactly our ids,
and its greedy continuations are ours (f32: all of them; q8_0: its next token is ours at >= 90% of the positions of
our continuation, each given the same context)."""

import pytest
import torch
from export_helpers import novels_head, novels_tokenizer_fixture, tiny_causal_lm, tiny_dir_fixture  # noqa: F401
from test_gguf import TRICKY, VARIANTS

llama_cpp = pytest.importorskip(
    "llama_cpp",
    reason="llama-cpp-python is not installed (see docs/export.md: it builds llama.cpp from source)",
)
pytestmark = pytest.mark.slow


def llama(path, n_ctx=256, logits_all=False):
    return llama_cpp.Llama(
        model_path=str(path), n_ctx=n_ctx, n_threads=1, n_batch=n_ctx, verbose=False, logits_all=logits_all
    )


def llama_next_tokens(llm, ids, continuation):
    """llama.cpp's argmax at each position of ``continuation`` given ``ids`` + the continuation before it (teacher
    forcing: one early difference does not turn every later token into a difference)."""
    llm.reset()
    llm.eval(ids + continuation)
    return llm.scores[len(ids) - 1 : len(ids) - 1 + len(continuation)].argmax(-1).tolist()


def llama_greedy(llm, ids, new_tokens):
    """llama.cpp's greedy continuation (its sampler at temperature 0: the argmax at each step)."""
    out = []
    for token in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
        out.append(token)
        if len(out) == new_tokens:
            return out
    return out


def prompts(tokenizer):
    return [tokenizer(text[:120])["input_ids"] for text in novels_head(200)[:3]]


def ours_greedy(model, ids, new_tokens):
    x = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
        )
    return out[0, len(ids) :].tolist()


def test_llama_cpp_tokenizes_and_continues_like_us(tiny_dir, novels_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    from hf_gptlite.export.gguf import export_gguf

    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    f32 = llama(export_gguf(model, novels_tokenizer, tmp_path / "f32.gguf"), n_ctx=1024)
    assert f32.n_vocab() == len(novels_tokenizer)
    for text in [*novels_head(2000), TRICKY, "a [EOS] b <|endoftext|>"]:
        ours = novels_tokenizer(text)["input_ids"]
        assert f32.tokenize(text.encode("utf-8"), add_bos=False, special=False) == ours
        assert f32.detokenize(ours).decode("utf-8") == text
    assert (f32.token_bos(), f32.token_eos()) == (0, 1)

    q8 = llama(export_gguf(model, novels_tokenizer, tmp_path / "q8.gguf", dtype="q8_0"), logits_all=True)
    same = total = 0
    for ids in prompts(novels_tokenizer):
        want = ours_greedy(model, ids, 32)
        assert llama_greedy(f32, ids, 32) == want
        got = llama_next_tokens(q8, ids, want)
        same += sum(a == b for a, b in zip(got, want))
        total += len(want)
    assert same >= 0.9 * total, f"q8_0 agrees on {same}/{total} tokens"


@pytest.mark.parametrize("variant", VARIANTS)
def test_llama_cpp_runs_the_configs_beyond_gpt2s_defaults(novels_tokenizer, tmp_path, variant):
    from hf_gptlite.export.gguf import export_gguf

    model = tiny_causal_lm(novels_tokenizer, **VARIANTS[variant])
    llm = llama(
        export_gguf(model, novels_tokenizer, tmp_path / "m.gguf"), n_ctx=model.config.max_position_embeddings
    )
    for ids in prompts(novels_tokenizer)[:2]:
        ids = ids[:40]
        assert llama_greedy(llm, ids, 24) == ours_greedy(model, ids, 24), variant
