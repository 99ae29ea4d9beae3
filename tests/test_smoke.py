import torch

from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM


def test_tiny_forward():
    model = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny")).eval()
    out = model(torch.randint(0, 512, (2, 7)))
    assert out.logits.shape == (2, 7, 512)
