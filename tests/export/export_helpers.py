"""Helpers and fixtures of the export tests, imported by name: a tiny GPTLite (random weights scaled up so greedy
continuations vary) and a tokenizer trained on the novels. (A conftest.py here would replace tests/conftest.py as
the module `conftest` that other test files import from.)"""

import pytest
import torch


def novels_head(chars: int = 2000) -> list[str]:
    """The first ``chars`` characters of each embedded novel (cleaned as the tokenizer job reads them)."""
    from hf_gptlite.data.text import clean_book_text, default_corpus_files, read_text_files

    return [clean_book_text(t)[:chars] for t in read_text_files(default_corpus_files())]


def tiny_causal_lm(tokenizer, seed=0, scale=4.0, **overrides):
    """A random-init tiny GPTLiteForCausalLM sized to ``tokenizer``; weights scaled so logits are not flat."""
    from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM
    from hf_gptlite.tokenization import align_config_with_tokenizer

    config = align_config_with_tokenizer(
        GPTLiteConfig.from_preset("tiny", hidden_dropout_prob=0.0), tokenizer
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    if "hidden_size" in overrides and "intermediate_size" not in overrides:
        config.intermediate_size = 4 * config.hidden_size
    torch.manual_seed(seed)
    model = GPTLiteForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(scale)
    return model


@pytest.fixture(scope="session", name="novels_tokenizer")
def novels_tokenizer_fixture():
    """A 512-token byte-level BPE tokenizer trained on 30,000 characters of each novel."""
    from hf_gptlite.data.text import clean_book_text, default_corpus_files, read_text_files
    from hf_gptlite.tokenization import train_bpe_tokenizer

    texts = [clean_book_text(t)[:30_000] for t in read_text_files(default_corpus_files())]
    return train_bpe_tokenizer(texts, vocab_size=512, show_progress=False)


@pytest.fixture(scope="session", name="tiny_dir")
def tiny_dir_fixture(tmp_path_factory, novels_tokenizer):
    """A save_pretrained folder of a tiny model (context 1024, which transformers' GGUF reader assumes for gpt2)."""
    folder = tmp_path_factory.mktemp("export") / "tiny"
    model = tiny_causal_lm(novels_tokenizer, max_position_embeddings=1024)
    model.save_pretrained(folder)
    novels_tokenizer.save_pretrained(folder)
    return folder
