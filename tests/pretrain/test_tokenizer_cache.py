"""A tokenizer trained in the run is cached beside the token cache: a second run over the same corpus with the same
settings neither trains nor reads the corpus, and gets the same tokenizer; another vocabulary or corpus gets a new
one."""

import shutil

import pytest
from conftest import tiny_pretrain_cfg

import hf_gptlite.data.corpus as corpus_module
import hf_gptlite.tokenization as tokenization
from hf_gptlite.data.corpus import load_corpus, sample_text
from hf_gptlite.data.token_cache import check_tokenizer_cache
from hf_gptlite.pretrain import run_pretraining


def must_not_run(what):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} was called")
    return fail


@pytest.fixture
def books(tmp_path, corpus):
    """Copies of the corpus's two books (this test changes one)."""
    folder = tmp_path / "books"
    folder.mkdir()
    return [shutil.copy(path, folder) for path in corpus["files"]]


def test_a_trained_tokenizer_is_cached_and_reused_without_reading_the_corpus(corpus, books, tmp_path, monkeypatch,
                                                                             capsys):
    cache = tmp_path / "cache"

    def run(name, **kw):
        run_pretraining(tiny_pretrain_cfg(corpus, tmp_path / name, train_files=books, tokenizer_name_or_path=None,
                                          token_cache_dir=str(cache), max_steps=1, **{"vocab_size": 300, **kw}))
        return (tmp_path / name / "tokenizer" / "tokenizer.json").read_bytes(), capsys.readouterr().out

    first, out = run("a")
    (folder,) = (cache / "tokenizers").iterdir()
    assert "tokenizer: trained in" in out and check_tokenizer_cache(folder) is None
    # the cached tokenizer is the one the trainer makes (the cache changes nothing)
    direct = tokenization.train_bpe_tokenizer(sample_text(load_corpus(books, clean=True).train, 256e6),
                                              vocab_size=300, show_progress=False)
    direct.save_pretrained(tmp_path / "direct")
    assert (tmp_path / "direct" / "tokenizer.json").read_bytes() == first

    # a second run: no training, no text read (the token cache is reused too)
    with monkeypatch.context() as m:
        m.setattr(tokenization, "train_bpe_tokenizer", must_not_run("the tokenizer trainer"))
        m.setattr(corpus_module.Document, "chunks", must_not_run("reading the corpus"))
        m.setattr(corpus_module, "split_text_file", must_not_run("reading the corpus"))
        second, out = run("b")
    assert second == first and f"tokenizer: reusing {folder}\n" in out and "token cache: reusing" in out

    # another vocabulary, or a changed corpus: a new tokenizer
    third, out = run("c", vocab_size=290)
    assert "tokenizer: trained in" in out and third != first
    with open(books[0], "a", encoding="utf-8") as f:
        f.write("\nUma linha nova no fim do livro.\n")
    _, out = run("d")
    assert "tokenizer: trained in" in out and len(list((cache / "tokenizers").iterdir())) == 3


def test_a_damaged_cached_tokenizer_is_trained_again(corpus, books, tmp_path, capsys):
    def run(name):
        run_pretraining(tiny_pretrain_cfg(corpus, tmp_path / name, train_files=books, tokenizer_name_or_path=None,
                                          vocab_size=300, token_cache_dir=str(tmp_path / "cache"), max_steps=1))
        return (tmp_path / name / "tokenizer" / "tokenizer.json").read_bytes(), capsys.readouterr().out

    first, _ = run("a")
    (folder,) = (tmp_path / "cache" / "tokenizers").iterdir()
    (folder / "tokenizer.json").write_text((folder / "tokenizer.json").read_text()[:-100])  # cut short
    assert "SHA-256" in check_tokenizer_cache(folder)
    second, out = run("b")
    assert "is damaged" in out and "tokenizer: trained in" in out and second == first
    assert [p.name for p in (tmp_path / "cache" / "tokenizers").iterdir()] == [folder.name]  # nothing else left
