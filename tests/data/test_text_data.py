import re

import pytest

from hf_gptlite.data.text import clean_book_text, default_corpus_files, read_text_files


def test_default_corpus_files():
    files = default_corpus_files()
    assert len(files) == 8 and all(f.suffix == ".txt" and f.stat().st_size > 80_000 for f in files)
    assert "machado_de_assis-dom_casmurro.txt" in {f.name for f in files}


def test_read_text_files(tmp_path):
    a = tmp_path / "a.txt"
    a.write_bytes("\ufeffolá\r\nmundo".encode())
    b = tmp_path / "b.txt"
    b.write_text("segundo", encoding="utf-8")
    assert read_text_files([a, str(b)]) == ["olá\r\nmundo", "segundo"]  # BOM dropped, bytes otherwise kept
    assert read_text_files(b) == ["segundo"]


def test_read_text_files_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_text_files([tmp_path / "missing.txt"])
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.*empty.txt"):
        read_text_files([empty])
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("ação".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not valid UTF-8 \(byte 1"):
        read_text_files([latin1])
    with pytest.raises(IsADirectoryError, match="folder"):
        read_text_files([tmp_path])
    with pytest.raises(ValueError, match="no text files"):
        read_text_files([])


def test_clean_rejoins_wrapped_lines_and_keeps_paragraphs():
    text = (
        "Título do Livro\n"
        "Autor\n"
        "A primeira linha do parágrafo é longa o bastante\n"
        "para continuar na linha de baixo, e aqui termina.\n"
        "Um parágrafo novo começa depois de uma linha curta,\n"
        "que o fecha.\n"
    )
    assert clean_book_text(text, wrap_width=50) == (
        "Título do Livro\n"
        "Autor\n"
        "A primeira linha do parágrafo é longa o bastante para continuar na linha de baixo, e aqui termina.\n"
        "Um parágrafo novo começa depois de uma linha curta, que o fecha."
    )


def test_clean_keeps_dialogue_turns_and_unsure_breaks():
    text = (
        "— Uma fala longa que ocupa a linha inteira até a margem,\n"
        "— outra fala, que começa com travessão.\n"
        "-- Uma fala no outro estilo, também longa até a margem!\n"
        "Depois dela uma frase que começa com maiúscula, mantida.\n"
    )
    assert clean_book_text(text, wrap_width=56).split("\n") == [line for line in text.split("\n") if line]


def test_clean_removes_page_numbers():
    text = (
        "depois preparando o almoço para os trabalhadores que havia para\n"
        "\n"
        "4\n"
        "além de um grande capinzal aos fundos da venda. Varria a casa.\n"
        "Curta.\n"
        "  12 \n"
        "Outro parágrafo.\n"
    )
    assert clean_book_text(text, wrap_width=64) == (
        "depois preparando o almoço para os trabalhadores que havia para além de um grande capinzal "
        "aos fundos da venda. Varria a casa.\nCurta.\nOutro parágrafo."
    )


def test_clean_hyphens_and_glued_words():
    text = (
        "mas disposto a fazê-\n"
        "lo, e dirigi-\n"  # short line: still a word cut at the hyphen ("fazê-lo")
        "-me ao Rocio; espreguiçouse, bocejou e foi-se embora sem mais demora, de ordiná-\n"
        "rio.\n"
    )
    assert clean_book_text(text, wrap_width=20) == (
        "mas disposto a fazê-lo, e dirigi-me ao Rocio; espreguiçouse, bocejou e foi-se embora sem mais demora, "
        "de ordinário."
    )


def test_clean_line_endings_and_blank_lines():
    text = "Linha um que é longa\r\ne continua.\r\n\r\n\r\nOutro.  \r\n"
    assert clean_book_text(text, wrap_width=20) == "Linha um que é longa e continua.\nOutro."


def test_clean_real_book():
    raw = read_text_files(default_corpus_files()[0])[0]  # O Cortiço: 160 page numbers, wrapped at ~85 columns
    assert sum(bool(re.fullmatch(r"\d+", line)) for line in raw.split("\n")) == 160
    clean = clean_book_text(raw)
    paragraphs = clean.split("\n")
    assert not any(re.fullmatch(r"\s*\d+\s*", p) for p in paragraphs)
    assert len(paragraphs) < raw.count("\n") / 2  # wrapped lines were re-joined
    assert "" not in paragraphs and len(re.findall(r"\w+", clean)) > 0.99 * len(re.findall(r"\w+", raw)) - 160
    assert "vendeiro que enriqueceu" in clean  # the first wrap of chapter I, re-joined
