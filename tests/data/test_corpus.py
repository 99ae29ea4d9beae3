"""Corpora read in bounded chunks: the same text, the same validation tail and the same token ids as reading each
document whole."""

import json

import pytest

from hf_gptlite.data.corpus import (
    Document,
    expand_corpus_paths,
    iter_documents,
    load_corpus,
    sample_text,
    split_document,
    split_text_file,
)
from hf_gptlite.data.text import clean_book_text, default_corpus_files, read_text_files
from hf_gptlite.data.token_cache import encode_in_memory

# line breaks with spaces, blank lines, CRLF, no-break spaces, tabs and multi-byte characters on either side
TRICKY = ("Olá, mundo!\n  indented line\n\nnext paragraph \nspace before\r\nCRLF line\n\u00a0nbsp\n"
          "tab\t\nend—travessão\n日本語の文\n🙂 emoji\n\n\n- lista\n'quoted'\n") * 40


def whole_ids(tokenizer, texts):
    return [t for text in texts for t in (*tokenizer(text, add_special_tokens=False)["input_ids"],
                                          tokenizer.eos_token_id)]


@pytest.mark.parametrize("clean", [False, True])
def test_chunked_tokens_are_the_whole_documents_tokens_on_the_novels(corpus, clean):
    """Every novel (its first 120 KB: the whole novels are compared in tests/pretrain/test_token_blocks.py), encoded in
    ~2 KB pieces cut at safe line breaks, gives the ids of the novel encoded at once."""
    tok = corpus["tokenizer"]
    texts = [t[:120_000] for t in read_text_files(default_corpus_files())]
    texts = [clean_book_text(t) for t in texts] if clean else texts
    ids, counts = encode_in_memory(iter_documents([Document(text=t) for t in texts], chunk_bytes=2048), tok)
    assert counts["documents"] == 8 and counts["characters"] == sum(map(len, texts)) + 8
    assert ids.tolist() == whole_ids(tok, texts)


def test_chunked_tokens_are_whole_tokens_on_tricky_line_breaks(corpus, byte_tokenizer, tmp_path):
    path = tmp_path / "tricky.txt"
    path.write_text(TRICKY, encoding="utf-8")
    for tok in (corpus["tokenizer"], byte_tokenizer):
        for chunk_bytes in (7, 64, 1000):
            pieces = list(Document(path, 0, path.stat().st_size).chunks(chunk_bytes))
            assert "".join(pieces) == TRICKY and len(pieces) > 1
            ids, _ = encode_in_memory(iter([iter(pieces)]), tok)
            assert ids.tolist() == whole_ids(tok, [TRICKY])


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.3, 0.999])
def test_a_file_is_split_like_the_whole_text(tmp_path, fraction):
    """The validation tail found by reading the file in 16-byte blocks is split_document's, byte for byte."""
    cases = {
        "tricky": TRICKY,
        "bom_crlf": "\ufeff\n\nprimeira linha\r\nsegunda ação\r\n" * 30 + "\n\n",
        "one_line": "sem quebra de linha, só acentuação: é ó ã " * 20,
        "newlines_at_cut": "a\n" + "\n" * 50 + "b" * 30 + "\n\n\n" + "ç" * 40,
    }
    for name, text in cases.items():
        path = tmp_path / f"{name}.txt"
        path.write_bytes(text.encode("utf-8"))
        head, tail = split_text_file(path, fraction, block=16)
        expected = split_document(text.removeprefix("\ufeff"), fraction)
        assert ("".join(head.chunks(13)), "".join(tail.chunks(13))) == expected, name


def test_a_corpus_holds_out_each_files_tail_and_counts_nothing_twice(tmp_path):
    (tmp_path / "sub").mkdir()
    for i, name in enumerate(["b.txt", "a.txt", "sub/c.txt"]):
        (tmp_path / name).write_text(f"livro {i}\n" + "uma linha de texto\n" * 100, encoding="utf-8")
    (tmp_path / "notes.bin").write_bytes(b"\x00\x01")  # not a text file: left out of a folder
    assert [p.name for p in expand_corpus_paths([tmp_path])] == ["a.txt", "b.txt", "c.txt"]
    assert [p.name for p in expand_corpus_paths([str(tmp_path / "*.txt")])] == ["a.txt", "b.txt"]
    corpus = load_corpus([tmp_path], validation_fraction=0.1)
    for head, tail, path in zip(corpus.train, corpus.validation, expand_corpus_paths([tmp_path]), strict=True):
        assert ("".join(head.chunks()), "".join(tail.chunks())) == split_document(path.read_text(), 0.1)
    with pytest.raises(FileNotFoundError, match="no file matches"):
        load_corpus([str(tmp_path / "*.nothing")])


def test_table_files_give_one_document_per_row(tmp_path, corpus):
    rows = [{"text": f"documento {i}: " + "palavras " * (i % 7 + 1), "id": i} for i in range(60)] + [{"text": " ", "id": 60}]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    data = load_corpus([path], validation_fraction=0.2, seed=1)
    assert len(data.train) + len(data.validation) == 61 and len(data.validation) == 13
    ids, counts = encode_in_memory(iter_documents(data.train), corpus["tokenizer"])
    texts = [t for t in data.train["text"] if t.strip()]  # the blank row is no document
    assert counts["documents"] == len(texts) and ids.tolist() == whole_ids(corpus["tokenizer"], texts)
    with pytest.raises(ValueError, match="no column 'body'"):
        load_corpus([path], text_column="body")


def test_the_tokenizer_sample_is_bounded_and_spread(tmp_path):
    docs = [Document(text=f"{i}\n" * 5000) for i in range(10)]  # 10 documents of 10-20 KB
    everything = "".join(sample_text(docs, 1e9, chunk_bytes=1000))
    assert everything == "".join(d.text for d in docs)
    sample = list(sample_text(docs, 20_000, chunk_bytes=1000))
    assert 15_000 < sum(map(len, sample)) < 25_000
    assert {piece.split("\n")[0] for piece in sample} >= {str(i) for i in range(10)}  # every document sampled


def test_bad_files_are_named(tmp_path):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(("a" * 100 + "ação").encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not valid UTF-8 \(byte 101"):
        _ = load_corpus([latin1]).train  # the files are read when first used
    truncated = tmp_path / "cut.txt"
    truncated.write_bytes("linha\naçã".encode()[:-1])  # the file ends inside "ã"
    with pytest.raises(ValueError, match="cut.txt is not valid UTF-8"):
        _ = load_corpus([truncated]).train
    for content in (b"", b"\xef\xbb\xbf", b"\n \n"):
        (tmp_path / "empty.txt").write_bytes(content)
        with pytest.raises(ValueError, match="text file is empty: .*empty.txt"):
            _ = load_corpus([tmp_path / "empty.txt"]).train
    with pytest.raises(ValueError, match="mixes text files and table files"):
        load_corpus([latin1, tmp_path / "x.jsonl"])
