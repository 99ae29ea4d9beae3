"""The learners' attention module agrees with the model's attention layer."""

import torch

from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM
from hf_gptlite.learn.attention import CausalAttention, MultiHeadAttention, SelfAttention, SimpleSelfAttention


def test_simple_self_attention_is_a_convex_mix_of_inputs():
    x = torch.tensor([[0.43, 0.15, 0.89], [0.55, 0.87, 0.66], [0.57, 0.85, 0.64]])
    out = SimpleSelfAttention()(x)
    weights = torch.softmax(x @ x.T, dim=-1)
    torch.testing.assert_close(out, weights @ x)
    assert out.shape == x.shape


def test_self_attention_uses_scaled_scores():
    torch.manual_seed(0)
    att = SelfAttention(3, 2)
    x = torch.rand(1, 4, 3)
    q, k, v = att.W_query(x), att.W_key(x), att.W_value(x)
    torch.testing.assert_close(att(x), torch.softmax(q @ k.transpose(1, 2) / 2**0.5, -1) @ v)


def test_causal_attention_does_not_look_ahead():
    torch.manual_seed(0)
    att = CausalAttention(8, 4, context_length=10).eval()
    x = torch.rand(2, 6, 8)
    changed = x.clone()
    changed[:, 4:] = torch.rand(2, 2, 8)  # edit the future
    torch.testing.assert_close(att(x)[:, :4], att(changed)[:, :4])
    assert not torch.allclose(att(x)[:, 4:], att(changed)[:, 4:])


def test_multi_head_attention_equals_the_model_attention_layer():
    torch.manual_seed(0)
    model = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny", hidden_dropout_prob=0.0)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # non-trivial biases too
    layer = model.transformer.h[1].attn
    mha = MultiHeadAttention.from_model_attention(layer).eval()
    x = torch.randn(3, 17, 64)
    for impl in ("eager", "sdpa"):
        model.set_attn_implementation(impl)
        from transformers.masking_utils import create_causal_mask

        pos = torch.arange(17)[None]
        mask = create_causal_mask(config=model.config, inputs_embeds=x, attention_mask=None, cache=None,
                                  position_ids=pos)
        with torch.no_grad():
            expected, _ = layer(x, mask)
            torch.testing.assert_close(mha(x), expected, atol=1e-5, rtol=1e-5)
