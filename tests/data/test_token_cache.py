"""The token cache: built once, reused without tokenizing, rebuilt when the corpus or the tokenizer changes, and
never read when damaged."""

import os
import threading
import time

import numpy as np
import pytest

import hf_gptlite.data.token_cache as tc
from hf_gptlite.data.corpus import load_corpus
from hf_gptlite.data.token_cache import check_cache, open_token_cache


@pytest.fixture
def books(tmp_path, corpus):
    folder = tmp_path / "books"
    folder.mkdir()
    for i, path in enumerate(corpus["files"]):
        (folder / f"book{i}.txt").write_text(open(path, encoding="utf-8").read(), encoding="utf-8")
    return folder


@pytest.fixture
def builds(monkeypatch):
    """The corpora tokenized in this test (spied on ``encode_documents``: a reused cache calls it never)."""
    calls = []
    real = tc.encode_documents

    def spy(documents, *args, **kwargs):
        calls.append(1)
        return real(documents, *args, **kwargs)

    monkeypatch.setattr(tc, "encode_documents", spy)
    return calls


def whole_ids(tokenizer, texts):
    return [t for text in texts for t in (*tokenizer(text, add_special_tokens=False)["input_ids"],
                                          tokenizer.eos_token_id)]


def test_built_once_then_reused_without_tokenizing(books, corpus, tmp_path, builds):
    tok = corpus["tokenizer"]
    first = open_token_cache(load_corpus([books], clean=True), tok, tmp_path / "cache")
    assert len(builds) == 2  # train, validation
    assert first.tokens("train").dtype == np.uint16 and isinstance(first.tokens("train"), np.memmap)
    data = load_corpus([books], clean=True)
    assert first.tokens("train").tolist() == whole_ids(tok, ["".join(d.chunks()) for d in data.train])
    assert first.meta["validation"]["characters"] == sum(len("".join(d.chunks())) + 1 for d in data.validation)
    again = load_corpus([books], clean=True)
    second = open_token_cache(again, tok, tmp_path / "cache")
    assert len(builds) == 2 and second.folder == first.folder
    assert "_parts" not in again.__dict__  # the corpus was not even read
    assert np.array_equal(second.tokens("train"), first.tokens("train"))
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.folder.name]  # no temporary folder left


def test_a_changed_corpus_or_tokenizer_or_cleaning_builds_a_new_cache(books, corpus, byte_tokenizer, tmp_path, builds):
    cache = tmp_path / "cache"
    base = open_token_cache(load_corpus([books]), corpus["tokenizer"], cache)
    base_tokens, base = np.array(base.tokens("train")), base.folder
    assert open_token_cache(load_corpus([books], clean=True), corpus["tokenizer"], cache).folder != base
    assert open_token_cache(load_corpus([books]), byte_tokenizer, cache).folder != base
    assert open_token_cache(load_corpus([books], validation_fraction=0.2), corpus["tokenizer"], cache).folder != base
    path = books / "book0.txt"
    path.write_text(path.read_text() + "\nmais uma linha", encoding="utf-8")
    changed = open_token_cache(load_corpus([books]), corpus["tokenizer"], cache)
    assert changed.folder != base and len(builds) == 5 * 2
    assert len(changed.tokens("train")) > len(base_tokens)


def _damage(folder, how):
    if how == "truncated":
        with open(folder / "train.bin", "r+b") as f:
            f.truncate(os.path.getsize(folder / "train.bin") - 2)
    elif how == "flipped":
        with open(folder / "train.bin", "r+b") as f:
            f.seek(100)
            byte = f.read(1)
            f.seek(100)
            f.write(bytes([byte[0] ^ 1]))
    elif how == "no_meta":  # killed before meta.json was written (cannot happen with the rename, but any damage)
        (folder / "meta.json").unlink()
    elif how == "bad_meta":
        (folder / "meta.json").write_text("{not json")


@pytest.mark.parametrize("how", ["truncated", "flipped", "no_meta", "bad_meta"])
def test_a_damaged_cache_is_detected_and_rebuilt_never_read(books, corpus, tmp_path, builds, how):
    tok = corpus["tokenizer"]
    good = open_token_cache(load_corpus([books]), tok, tmp_path / "cache")
    expected = np.array(good.tokens("train"))
    _damage(good.folder, how)
    assert check_cache(good.folder) is not None
    # a process that does not build waits: it never reads the damaged cache
    result = {}
    waiter = threading.Thread(target=lambda: result.update(
        cache=open_token_cache(load_corpus([books]), tok, tmp_path / "cache", builder=False, poll_s=0.05)))
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive() and not result
    messages = []
    rebuilt = open_token_cache(load_corpus([books]), tok, tmp_path / "cache", log=messages.append)
    waiter.join(timeout=30)
    assert "is damaged" in messages[0] and len(builds) == 4
    assert np.array_equal(rebuilt.tokens("train"), expected)
    assert np.array_equal(result["cache"].tokens("train"), expected)


def test_a_half_written_build_leaves_no_cache(books, corpus, tmp_path, monkeypatch):
    """A build that dies half-way (here: an error in the validation split) leaves no cache folder behind."""
    tok = corpus["tokenizer"]
    real = tc.encode_documents
    calls = []

    def dies_on_validation(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tc, "encode_documents", dies_on_validation)
    with pytest.raises(KeyboardInterrupt):
        open_token_cache(load_corpus([books]), tok, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.setattr(tc, "encode_documents", real)
    assert check_cache(open_token_cache(load_corpus([books]), tok, tmp_path / "cache").folder) is None


def test_a_large_vocabulary_is_stored_in_32_bits(corpus):
    class Big:
        def __len__(self):
            return 70_000

    assert tc.token_dtype(Big()) == np.uint32 and tc.token_dtype(corpus["tokenizer"]) == np.uint16
