"""--clean_text streamed: a file cleaned in spans (its wrap width from a first pass) gives clean_book_text of the whole
file character for character, and the corpus's cleaned head and tail are split_document's, without reading a file
whole."""

import random

import pytest

import hf_gptlite.data.corpus as corpus_module
import hf_gptlite.data.text as text_module
from hf_gptlite.data.corpus import load_corpus, split_document
from hf_gptlite.data.text import (
    clean_book_file,
    clean_book_spans,
    clean_book_text,
    default_corpus_files,
    file_wrap_width,
    read_text_files,
)

NOVELS = default_corpus_files()
LINES = ["", "   ", "12", " 7 ", "\t", "— Olá, disse ele.", "-- Tu", "- Eu", "Uma linha longa que vai até o fim da largura",
         "Fim da frase.", "Começo", "palavra cortada fazê-", "lo resto", "-me disse", "ordiná-", "rio continua aqui",
         "x" * 60, "y" * 30 + " fim.", "Capital inicial", "  recuo no início", "ação 🙂 日本語", "a-", "Z"]
BREAKS = ["\n", "\n", "\n", "\r\n", "\r", "\n\n", "\r\r\n", "\n\r"]


@pytest.fixture
def tiny_spans(monkeypatch):
    """Cleaning spans of ~2 KB (thousands of cuts in the novels) instead of 8 MB."""
    monkeypatch.setattr(text_module, "CLEAN_CHUNK_BYTES", 2048)
    corpus_module._clean_plan.cache_clear()
    yield
    corpus_module._clean_plan.cache_clear()


@pytest.mark.parametrize("path", NOVELS, ids=[p.stem for p in NOVELS])
def test_every_novel_cleaned_in_spans_is_clean_book_text_of_the_whole(path):
    whole = clean_book_text(read_text_files([path])[0])
    spans = list(clean_book_spans(path, file_wrap_width(path), chunk_bytes=1))
    assert len(spans) > 500 and spans[-1][1] == path.stat().st_size  # a cut after nearly every paragraph
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    for chunk_bytes in (1, 2048):
        pieces = list(clean_book_file(path, chunk_bytes))
        assert "".join(pieces) == whole and all(p.endswith("\n") for p in pieces[:-1])
    # memory: no span much larger than asked (the longest paragraph of the novels is a few KB)
    assert max(b - a for a, b in clean_book_spans(path, file_wrap_width(path), 2048)) < 12_000


def test_any_layout_cleaned_in_spans_is_clean_book_text(tmp_path):
    """Random texts of wrapped lines, page numbers, blank lines, dialogue, hyphens, CR/CRLF/LF and a BOM."""
    rng = random.Random(0)
    path = tmp_path / "t.txt"
    checked = 0
    for _ in range(400):
        text = "".join(rng.choice(LINES) + rng.choice(BREAKS) for _ in range(rng.randint(1, 40)))
        path.write_bytes(("\ufeff" if rng.random() < 0.1 else "").encode() + text.encode())
        if not text.strip():
            continue
        whole = clean_book_text(read_text_files([path])[0])
        for chunk_bytes in (1, 9, 60):
            assert "".join(clean_book_file(path, chunk_bytes)) == whole, (text, chunk_bytes)
        checked += 1
    assert checked > 350


def test_the_wrap_width_is_the_whole_texts(tmp_path):
    """The histogram's percentile is _wrap_width's, on the lines clean_book_text keeps (page numbers dropped)."""
    path = tmp_path / "w.txt"
    lines = ["a" * n for n in (3, 50, 50, 51, 52, 70, 70, 70, 71, 80, 12)] + ["  12  ", "", "1234"]
    path.write_text("\n".join(lines * 3), encoding="utf-8")
    kept = [ln for ln in lines * 3 if not text_module._PAGE_NUMBER.fullmatch(ln)]  # what clean_book_text keeps
    assert file_wrap_width(path) == text_module._wrap_width(kept) == 71  # the 29th of 33 lengths


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.0])
def test_the_cleaned_head_and_tail_are_split_document_of_the_cleaned_file(tiny_spans, fraction):
    corpus = load_corpus(NOVELS, clean=True, validation_fraction=fraction)
    for path, head, tail in zip(NOVELS, corpus.train, corpus.validation or [None] * len(NOVELS), strict=True):
        expected = split_document(clean_book_text(read_text_files([path])[0]), fraction)
        assert "".join(head.chunks(4096)) == expected[0]
        assert ("".join(tail.chunks(4096)) if tail is not None else "") == expected[1]


def test_a_cleaned_file_is_never_read_whole(tiny_spans, monkeypatch, tmp_path):
    """The corpus reads a cleaned file in spans: read_text_files (the whole file) is never called, and no span is
    much longer than asked."""
    path = tmp_path / "book.txt"
    path.write_text("\n".join(read_text_files(NOVELS[:3])), encoding="utf-8")
    longest = []
    real = text_module.read_span
    monkeypatch.setattr(text_module, "read_span", lambda p, a, b: longest.append(b - a) or real(p, a, b))
    monkeypatch.setattr(text_module, "read_text_files", None)  # reading it whole would fail here
    corpus = load_corpus([path], clean=True)
    text = "".join(piece for doc in corpus.train + corpus.validation for piece in doc.chunks())
    assert len(text) > 1_000_000 and max(longest) < 12_000
