"""Plain-text corpora: the embedded Portuguese novels, reading text files, cleaning PDF-extraction artifacts.

The embedded novels (``hf_gptlite/resources/books_pt/``) were extracted from PDF e-books. Their layout:
one paragraph = several lines hard-wrapped at a fixed width (no blank line between paragraphs: a paragraph
ends with a line that stops short of the width), and bare page-number lines (with a blank line around them
in some books) that cut paragraphs in two. ``clean_book_text`` undoes both. Words the PDF extraction glued
together across a hyphenated line break ("espreguiçouse") cannot be split back reliably and are left alone.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

from ..errors import InputValueError, MissingInputError, NotAFileError

_PAGE_NUMBER = re.compile(r"[ \t]*\d{1,4}[ \t]*")
# a line that opens a dialogue turn: "— Tu", "– Tu", "-- Tu", "- Tu", "--Tu"
_DIALOGUE = re.compile(r"(?:[—–]|--|-\s)")
# Portuguese clitic pronouns (and "feira" of the weekdays): after a line-end hyphen they mean a real hyphen
_CLITIC = re.compile(r"(?:me|te|se|nos|vos|lhes?|[lnm]?[oa]s?|t[oa]s?|lh[oa]s?|feira)(?![^\W\d_])", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?…:;»”\"')\]]$")


def default_corpus_files() -> list[Path]:
    """The embedded Portuguese novels (public domain; see the README's "Tokenizer" section), sorted by name."""
    folder = Path(str(resources.files("hf_gptlite") / "resources" / "books_pt"))
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no embedded corpus files in {folder}; is the package installed with its data?")
    return files


def read_text_files(paths) -> list[str]:
    """Read UTF-8 text files, one string per file, bytes kept as they are (a leading BOM is dropped).

    Raises ``ValueError`` for no paths, an empty file or a file that is not UTF-8, ``FileNotFoundError`` for a
    missing file and ``IsADirectoryError`` for a folder, each naming the file (all ``hf_gptlite.errors.UserError``).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputValueError("no text files given")
    texts = []
    for path in paths:
        if not path.exists():
            raise MissingInputError(f"text file not found: {path}")
        if path.is_dir():
            raise NotAFileError(f"expected a text file, got a folder: {path}")
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputValueError(
                f"{path} is not valid UTF-8 (byte {e.start}: {data[e.start:e.start + 4]!r}); "
                "convert it first, e.g. `iconv -f latin1 -t utf-8`"
            ) from None
        text = text.removeprefix("\ufeff")
        if not text.strip():
            raise InputValueError(f"text file is empty: {path}")
        texts.append(text)
    return texts


def _wrap_width(lines: list[str]) -> int:
    """The width the text was wrapped at: the 90th percentile of its non-empty line lengths."""
    lengths = sorted(len(line) for line in lines if line)
    return lengths[int(0.9 * (len(lengths) - 1))] if lengths else 0


def clean_book_text(text: str, wrap_width: int | None = None, min_fill: float = 0.75) -> str:
    """Remove the PDF-extraction artifacts of the embedded novels; return one paragraph per line.

    - bare page-number lines (and the blank lines around them) are dropped;
    - hard-wrapped lines are re-joined: a line at least ``min_fill * wrap_width`` long continues into the
      next one, unless the next line opens a dialogue turn ("— ...", "-- ...") or the line ends a sentence
      and the next starts with a capital (then it may be a paragraph end: when unsure the break is kept);
    - a line ending in a hyphen after a letter, whatever its length, is a word cut in two and is joined without
      a space: the hyphen stays before a clitic pronoun ("fazê-" / "lo" -> "fazê-lo", "dirigi-" / "-me" ->
      "dirigi-me") and goes otherwise ("ordiná-" / "rio" -> "ordinário"; a compound cut at its own hyphen,
      "guarda-" / "chuva", would lose it: rare in these books);
    - blank lines are paragraph breaks; ``\\r\\n`` becomes ``\\n``; trailing spaces are removed.

    ``wrap_width`` is estimated from the text (90th percentile of line lengths) when not given.
    Glued hyphenations ("espreguiçouse") are left as they are.
    """
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    # drop page numbers with the blank lines around them: "para" / "" / "4" / "além" -> "para" / "além"
    kept: list[str] = []
    i = 0
    while i < len(lines):
        if _PAGE_NUMBER.fullmatch(lines[i]):
            while kept and not kept[-1]:
                kept.pop()
            i += 1
            while i < len(lines) and not lines[i]:
                i += 1
            continue
        kept.append(lines[i])
        i += 1
    width = wrap_width if wrap_width is not None else _wrap_width(kept)

    paragraphs: list[str] = []
    current = ""  # the paragraph being re-joined
    previous = ""  # its last physical line
    for line in kept:
        stripped = line.strip()
        if not stripped:  # blank line: paragraph break
            if current:
                paragraphs.append(current)
            current = previous = ""
            continue
        if current and _continues(previous, stripped, width, min_fill):
            if current.endswith("-") and stripped.startswith("-") and not _DIALOGUE.match(stripped):
                current += stripped[1:]  # "dirigi-" + "-me"
            elif current.endswith("-") and _CLITIC.match(stripped):
                current += stripped  # "fazê-" + "lo": a hyphenated word, keep the hyphen
            elif current.endswith("-"):
                current = current[:-1] + stripped  # "ordiná-" + "rio": a syllable break, drop the hyphen
            else:
                current += " " + stripped
        else:
            if current:
                paragraphs.append(current)
            current = stripped
        previous = line
    if current:
        paragraphs.append(current)
    return "\n".join(paragraphs)


# ---- the same cleaning, streamed: a file of any size in bounded memory -------------------------------------
_LINE_END = re.compile(rb"\r\n|\r|\n")  # clean_book_text's line breaks (no UTF-8 character contains these bytes)
CLEAN_CHUNK_BYTES = 8 << 20  # raw text cleaned at a time


def _file_lines(path: Path, block: int = 1 << 20):
    """(byte offset, line) for each line of a UTF-8 file, as clean_book_text splits and strips it: the same lines
    as ``read_text_files([path])[0].replace("\r\n", "\n").replace("\r", "\n").split("\n")``, each
    ``rstrip()``-ed. The offset is where the line starts (after a leading BOM for the first)."""
    from .corpus import _BOM, _decode

    with open(path, "rb") as f:
        offset = 3 if f.read(3) == _BOM else 0
        f.seek(offset)
        data = b""
        while True:
            new = f.read(block)
            data += new
            # a final "\r" may be the first half of "\r\n": wait for the next block
            limit = len(data) - 1 if new and data.endswith(b"\r") else len(data)
            pos = 0
            for m in _LINE_END.finditer(data, 0, limit):
                yield offset + pos, _decode(data[pos:m.start()], path, offset + pos).rstrip()
                pos = m.end()
            if not new:
                yield offset + pos, _decode(data[pos:], path, offset + pos).rstrip()
                return
            data, offset = data[pos:], offset + pos


def file_wrap_width(path: Path) -> int:
    """``clean_book_text``'s wrap width of a whole file (the 90th percentile of the lengths of its lines that are
    neither blank nor page numbers), from a histogram of line lengths: one pass, memory flat in the file's size."""
    counts: dict[int, int] = {}
    for _, line in _file_lines(path):
        if line and not _PAGE_NUMBER.fullmatch(line):
            counts[len(line)] = counts.get(len(line), 0) + 1
    rank = int(0.9 * (sum(counts.values()) - 1))  # the index _wrap_width takes in the sorted lengths
    for length in sorted(counts):
        rank -= counts[length]
        if rank < 0:
            return length
    return 0


def clean_book_spans(path: Path, wrap_width: int, chunk_bytes: int = CLEAN_CHUNK_BYTES, min_fill: float = 0.75):
    """Byte spans ``(start, end)`` of ``path``, each about ``chunk_bytes`` or more, such that ``clean_book_text`` of
    each span alone (with the file's ``wrap_width``), joined by ``"\n"``, is ``clean_book_text`` of the whole file.

    A span ends just before a line L that is neither blank nor a page number, after a line P that is one too and
    that L does not continue (``_continues``: P ends its paragraph), or after a blank line that follows such a P.
    Why that is exact: page numbers only drop blank lines next to them and stop at L, so both sides keep the lines
    they keep in the whole file; and the whole file starts a new paragraph at L (P's paragraph ends, or the blank line
    ended it), as a span that starts at L does. Both sides have text, so the join adds the one line break the whole
    file has between the two paragraphs. A file with no such line (one endless paragraph) is one span."""
    start = None
    before, previous = None, None  # the two lines before this one
    for offset, line in _file_lines(path):
        if start is None:
            start = offset
        plain = bool(line) and not _PAGE_NUMBER.fullmatch(line)
        if plain and offset - start >= chunk_bytes and previous is not None:
            ends_paragraph = (
                bool(previous) and not _PAGE_NUMBER.fullmatch(previous)
                and not _continues(previous, line.strip(), wrap_width, min_fill)
            ) or (not previous and bool(before) and not _PAGE_NUMBER.fullmatch(before))
            if ends_paragraph:
                yield start, offset
                start = offset
        before, previous = previous, line
    yield start, os.path.getsize(path)


def read_span(path: Path, start: int, end: int) -> str:
    from .corpus import _decode

    with open(path, "rb") as f:
        f.seek(start)
        return _decode(f.read(end - start), path, start)


def clean_book_file(path, chunk_bytes: int = CLEAN_CHUNK_BYTES, min_fill: float = 0.75):
    """``clean_book_text`` of a whole file, streamed: pieces whose concatenation is exactly
    ``clean_book_text(read_text_files([path])[0])``, each but the last ending with a line break; a first pass finds
    the wrap width, then ``clean_book_spans`` are cleaned one at a time. Memory: about ``chunk_bytes`` (more only for a
    paragraph longer than that)."""
    path = Path(path)
    width = file_wrap_width(path)
    pending = None
    for start, end in clean_book_spans(path, width, chunk_bytes, min_fill):
        if pending is not None:
            yield pending + "\n"
        pending = clean_book_text(read_span(path, start, end), wrap_width=width, min_fill=min_fill)
    yield pending


def _continues(previous: str, line: str, width: int, min_fill: float) -> bool:
    """Whether ``line`` continues the paragraph whose last physical line is ``previous``."""
    if previous[-2:-1].isalpha() and previous.endswith("-"):
        if line[:1].isalpha() or (line.startswith("-") and line[1:2].isalpha()):
            return True  # a word cut at a hyphen: "fazê-" / "lo", "dirigi-" / "-me"
    if len(previous) < min_fill * width:
        return False  # a short line ends its paragraph
    if _DIALOGUE.match(line):
        return False  # a new dialogue turn
    if _SENTENCE_END.search(previous) and line[:1].isupper():
        return False  # maybe a paragraph end: keep the break
    return True


__all__ = ["clean_book_file", "clean_book_spans", "clean_book_text", "default_corpus_files", "file_wrap_width",
           "read_text_files"]
