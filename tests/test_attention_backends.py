"""Attention goes through transformers' ALL_ATTENTION_FUNCTIONS: other kernels plug in unchanged."""

import pytest
import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM


def _model():
    torch.manual_seed(0)
    return GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny", hidden_dropout_prob=0.0)).eval()


# flex_attention also matches (checked by hand) but compiles for ~2 minutes on CPU: not in the suite.
@pytest.mark.parametrize("impl", ["sdpa"])
def test_backends_match_eager_with_and_without_padding(impl):
    model = _model()
    x = torch.randint(3, 512, (2, 12))
    mask = torch.ones_like(x)
    mask[0, :4] = 0  # left padding in row 0
    with torch.no_grad():
        model.set_attn_implementation("eager")
        ref, ref_pad = model(x).logits, model(x, attention_mask=mask).logits
        model.set_attn_implementation(impl)
        got, got_pad = model(x).logits, model(x, attention_mask=mask).logits
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_pad[1], ref_pad[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_pad[0, 4:], ref_pad[0, 4:], atol=1e-5, rtol=1e-5)


def test_a_registered_custom_kernel_is_called():
    calls = []
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]

    def counting_attention(module, *args, **kwargs):
        calls.append(module.layer_idx)
        return sdpa(module, *args, **kwargs)

    ALL_ATTENTION_FUNCTIONS.register("counting", counting_attention)
    model = _model()
    x = torch.randint(3, 512, (1, 8))
    with torch.no_grad():
        ref = model(x).logits
        model.set_attn_implementation("counting")
        got = model(x).logits
    assert calls == [0, 1]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
