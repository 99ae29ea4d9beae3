"""pad_vocab_size_multiple: padded embedding/output rows, same function as the unpadded model."""

import pytest
import torch

from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM


def _pair(**overrides):
    cfg = dict(vocab_size=301, hidden_dropout_prob=0.0, **overrides)
    torch.manual_seed(0)
    plain = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny", **cfg)).eval()
    padded = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny", pad_vocab_size_multiple=64, **cfg)).eval()
    state = plain.state_dict()
    with torch.no_grad():  # the padded model's first vocab_size rows are the plain model's rows
        for name, p in padded.state_dict().items():
            p[: state[name].shape[0]].copy_(state[name])
    return plain, padded


@pytest.mark.parametrize("tie", [True, False])
def test_padded_vocab_same_logits_loss_and_generation(tie):
    plain, padded = _pair(tie_word_embeddings=tie)
    assert padded.transformer.wte.weight.shape[0] == 320 and padded.lm_head.weight.shape[0] == 320
    ids = torch.randint(3, 301, (2, 12))
    a, b = plain(input_ids=ids, labels=ids), padded(input_ids=ids, labels=ids)
    assert b.logits.shape == (2, 12, 301)
    torch.testing.assert_close(b.logits, a.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(b.loss, a.loss, rtol=0, atol=1e-6)
    b.loss.backward()  # the sliced logits train the real rows only
    assert padded.lm_head.weight.grad[301:].abs().sum() == 0
    gen = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=2)
    assert torch.equal(plain.generate(ids, **gen), padded.generate(ids, **gen))


def test_padded_vocab_to_gpt2_drops_padding():
    plain, padded = _pair()
    gpt2 = padded.to_gpt2().eval()
    assert gpt2.transformer.wte.weight.shape == (301, 64)
    ids = torch.randint(3, 301, (2, 9))
    torch.testing.assert_close(gpt2(ids).logits, plain(ids).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("bad", [0, -64, 2.5, True])
def test_bad_pad_vocab_size_multiple(bad):
    with pytest.raises(ValueError, match="pad_vocab_size_multiple"):
        GPTLiteConfig(pad_vocab_size_multiple=bad)
