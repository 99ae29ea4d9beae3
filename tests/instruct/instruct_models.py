"""Tiny models with a known behaviour for the instruction-tuning tests."""

import torch
import torch.nn.functional as F

from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM


def wired_forty_two(tokenizer, max_position_embeddings=2048) -> GPTLiteForCausalLM:
    """A tiny GPTLite wired by hand as a bigram model: after the generation prompt's last token it writes "42"
    and then end-of-text, whatever the prompt (a deterministic judge; training one takes minutes on a busy CPU)."""
    torch.manual_seed(0)
    config = GPTLiteConfig.from_preset("tiny", vocab_size=len(tokenizer), max_position_embeddings=max_position_embeddings,
                                       tie_word_embeddings=False, hidden_dropout_prob=0.0)
    model = GPTLiteForCausalLM(config).eval()
    last = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], add_generation_prompt=True,
                                         return_dict=False)[-1]
    chain = [last, *tokenizer("42", add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    assert len(set(chain)) == len(chain)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("c_proj.weight", "c_proj.bias", "wpe.weight")):
                p.zero_()  # the blocks add nothing and positions are blank: the last hidden state is wte[token]
        model.transformer.wte.weight.normal_()
        features = F.layer_norm(model.transformer.wte.weight, (config.hidden_size,))  # what ln_f hands lm_head
        model.lm_head.weight.zero_()
        for src, dst in zip(chain, chain[1:]):
            model.lm_head.weight[dst] += features[src]  # logit 64 for dst after src; others ~N(0, 8) or 0
    return model
