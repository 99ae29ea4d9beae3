"""Corpora read in bounded chunks: a document is a stream of text pieces, never one string in memory.

    .txt files, folders, globs  -> one document per file; the last ``validation_fraction`` of each (cut at a line
                                   break, as ``split_document`` does) is held out; read in chunks of ``chunk_bytes``
    .jsonl / .json / .parquet / .csv -> one document per row of ``text_column``, through ``datasets``' packaged
                                   builders (an Arrow file, memory-mapped); rows held out at random
    a ``datasets.Dataset``      -> one document per row (a Hub corpus)

A piece ends at a *safe cut*: after a line break that has a non-space character on both sides. Byte-level BPE
(GPT-2's regex, the tokenizers trained here) never merges across such a cut, so encoding the pieces one by one
gives the same ids as encoding the whole document (tests/data/test_corpus.py checks it on the novels).
A line longer than a chunk is read whole (the only case where memory follows the input).

``clean_text`` (``clean_book_text``) is streamed too (``text.clean_book_file``): a pass finds the file's wrap width,
another cuts it where cleaning each part alone is exact and counts the cleaned text (to hold out its tail); the
parts are then cleaned again as they are read.
"""

from __future__ import annotations

import functools
import glob as globlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputValueError, MissingInputError, NotAFileError

CHUNK_BYTES = 8 << 20  # text read (and tokenized) at a time
PIECE_CHARS = 64 << 10  # a chunk is cut into pieces of about this size: the tokenizer encodes them in parallel
TABLE_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
TEXT_SUFFIXES = (".txt", ".text", ".md")
_BOM = b"\xef\xbb\xbf"


# ---- safe cuts --------------------------------------------------------------------------------------
def _is_safe_cut(text: str, i: int) -> bool:
    """Whether ``text[i]`` is a line break a piece may end with (a non-space character on both sides)."""
    return 0 < i < len(text) - 1 and not text[i - 1].isspace() and not text[i + 1].isspace()


def last_safe_cut(text: str, start: int = 0, end: int | None = None) -> int:
    """The end of the last piece ``text[start:cut]`` with ``cut <= end`` that ends at a safe cut; 0 if none."""
    i = text.rfind("\n", start, len(text) if end is None else end)
    while i > start and not _is_safe_cut(text, i):
        i = text.rfind("\n", start, i)
    return i + 1 if i > start else 0


def next_safe_cut(text: str, start: int = 0) -> int:
    """The end of the first piece ``text[..:cut]`` with ``cut > start`` that ends at a safe cut; 0 if none."""
    i = text.find("\n", start)
    while i != -1 and not _is_safe_cut(text, i):
        i = text.find("\n", i + 1)
    return i + 1 if i != -1 else 0


def split_at_safe_cuts(text: str, size: int = PIECE_CHARS) -> list[str]:
    """``text`` cut into pieces of about ``size`` characters, each but the last ending at a safe cut."""
    pieces, start = [], 0
    while len(text) - start > 2 * size:
        cut = next_safe_cut(text, start + size)
        if not cut:
            break
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


# ---- one document: a span of a UTF-8 file, a cleaned file's head or tail, or a string ------------------
@dataclass(frozen=True)
class Document:
    """Text read lazily: bytes ``[start, end)`` of ``path``; or, with ``clean``, the cleaned file's ``part`` ("head"
    or "tail", held out by ``validation_fraction``); or ``text`` itself."""

    path: Path | None = None
    start: int = 0
    end: int = 0
    clean: bool = False
    part: str = "head"
    validation_fraction: float = 0.0
    text: str | None = None

    @property
    def num_bytes(self) -> int:
        if self.text is not None:
            return len(self.text)
        if not self.clean:
            return self.end - self.start
        head = int(os.path.getsize(self.path) * (1 - self.validation_fraction))  # about: cleaning removes a little
        return head if self.part == "head" else os.path.getsize(self.path) - head

    def chunks(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
        """The document's text in pieces of about ``chunk_bytes`` that end at safe cuts (the last one anywhere)."""
        if self.clean:
            for text in _cleaned_part(self.path, self.part, self.validation_fraction):
                yield from _cut_text(text, chunk_bytes)
            return
        if self.text is not None:
            yield from _cut_text(self.text, chunk_bytes)
            return
        with open(self.path, "rb") as f:
            f.seek(self.start)
            left, offset = self.end - self.start, self.start
            pending, carry = b"", ""  # an incomplete UTF-8 character; the text after the last safe cut
            while left > 0:
                new = f.read(min(chunk_bytes, left))
                if not new:
                    raise InputValueError(f"{self.path} changed while it was read: run again")
                left -= len(new)
                data = pending + new
                keep = _complete_utf8(data) if left > 0 else len(data)
                text = carry + _decode(data[:keep], self.path, offset)
                offset += keep
                pending = data[keep:]
                cut = last_safe_cut(text) if left > 0 else len(text)
                if cut:
                    yield text[:cut]
                carry = text[cut:]  # no safe cut in this chunk: read on
            if carry:
                yield carry

    def is_blank(self) -> bool:
        return all(not chunk.strip() for chunk in self.chunks())


def _cut_text(text: str, chunk_bytes: int) -> Iterator[str]:
    """``text`` in pieces of about ``chunk_bytes`` ending at safe cuts (the last one anywhere; at least one)."""
    start = 0
    while len(text) - start > chunk_bytes:
        cut = last_safe_cut(text, start, start + chunk_bytes) or next_safe_cut(text, start + chunk_bytes)
        if not cut:
            break
        yield text[start:cut]
        start = cut
    yield text[start:]


# ---- a cleaned file, streamed: split_document(clean_book_text(the file), validation_fraction) in pieces --------
@dataclass(frozen=True)
class _CleanPlan:
    width: int  # the file's wrap width
    spans: tuple  # (start, end) byte spans cleaned one at a time (text.clean_book_spans)
    cut: tuple  # the validation cut: (span index, character offset in that span's text, its line break included)


@functools.lru_cache(maxsize=4)
def _clean_plan(path: Path, mtime_ns: int, size: int, validation_fraction: float, chunk_bytes: int) -> _CleanPlan:
    """Two passes over the file (its wrap width; its spans and the length of each cleaned span) and one span cleaned
    again: where ``split_document`` cuts the whole cleaned text T = "\n".join(cleaned spans)."""
    from .text import clean_book_spans, clean_book_text, file_wrap_width, read_span

    width = file_wrap_width(path)
    spans = tuple(clean_book_spans(path, width, chunk_bytes))

    def text_of(k: int) -> str:  # span k cleaned, with the line break that joins it to the next
        cleaned = clean_book_text(read_span(path, *spans[k]), wrap_width=width)
        return cleaned + "\n" if k < len(spans) - 1 else cleaned

    lengths = [len(text_of(k)) for k in range(len(spans))]
    if validation_fraction <= 0:
        return _CleanPlan(width, spans, (len(spans) - 1, lengths[-1]))
    cut = int(sum(lengths) * (1 - validation_fraction))
    k, first = 0, 0  # the span holding position ``cut`` of T, and its first position
    while k < len(spans) - 1 and first + lengths[k] <= cut:
        first, k = first + lengths[k], k + 1
    text = text_of(k)
    after = text.find("\n", cut - first)
    after = first + after if after != -1 else -1
    before = text.rfind("\n", 0, cut - first)
    before = first + before if before != -1 else first - 1 if k > 0 else -1
    candidates = [p for p in (before, after) if p > 0]
    if candidates:  # as split_document: the line break nearest to the cut
        cut = min(candidates, key=lambda p: abs(p - cut)) + 1
    while k > 0 and cut <= first:  # the cut is the end of an earlier span
        k -= 1
        first -= lengths[k]
    return _CleanPlan(width, spans, (k, cut - first))


def _cleaned_part(path: Path, part: str, validation_fraction: float) -> Iterator[str]:
    """The cleaned file's head or tail (``split_document``'s, line breaks stripped at both ends) in pieces, each but
    the last ending with a line break, one span cleaned at a time."""
    from .text import CLEAN_CHUNK_BYTES, clean_book_text, read_span

    st = os.stat(path)
    plan = _clean_plan(path, st.st_mtime_ns, st.st_size, validation_fraction, CLEAN_CHUNK_BYTES)
    k_cut, offset = plan.cut
    last = len(plan.spans) - 1
    pieces = []
    for k in range(k_cut, last + 1) if part == "tail" else range(k_cut + 1):
        text = clean_book_text(read_span(path, *plan.spans[k]), wrap_width=plan.width) + ("\n" if k < last else "")
        if k == k_cut:
            text = text[offset:] if part == "tail" else text[:offset]
        if not pieces and part == "tail":
            text = text.lstrip("\n")
        if pieces:
            yield pieces.pop()
        pieces.append(text)
    yield pieces.pop().rstrip("\n") if part == "head" else pieces.pop()


def _complete_utf8(data: bytes) -> int:
    """The length of the longest prefix of ``data`` that does not end inside a UTF-8 character."""
    i = len(data)
    while i > 0 and len(data) - i < 4 and (data[i - 1] & 0xC0) == 0x80:
        i -= 1
    if i > 0 and data[i - 1] >= 0xC0:  # a lead byte whose continuation bytes are not all here
        need = 2 if data[i - 1] < 0xE0 else 3 if data[i - 1] < 0xF0 else 4
        if len(data) - (i - 1) < need:
            return i - 1
    return len(data)


def _decode(data: bytes, path, offset: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputValueError(
            f"{path} is not valid UTF-8 (byte {offset + e.start}: {data[e.start:e.start + 4]!r}); "
            "convert it first, e.g. `iconv -f latin1 -t utf-8`"
        ) from None


# ---- the validation tail of a file, found without reading it whole -------------------------------------
def split_document(text: str, validation_fraction: float) -> tuple[str, str]:
    """Cut ``text`` at the line break nearest to ``(1 - validation_fraction)`` of its length: (head, tail)."""
    if validation_fraction <= 0:
        return text, ""
    cut = int(len(text) * (1 - validation_fraction))
    after = text.find("\n", cut)
    before = text.rfind("\n", 0, cut)
    candidates = [p for p in (before, after) if p > 0]
    if candidates:
        cut = min(candidates, key=lambda p: abs(p - cut)) + 1
    return text[:cut].strip("\n"), text[cut:].strip("\n")


class _CharIndex:
    """Blocks of a UTF-8 file (each cut at a character boundary) with their character counts: character
    positions <-> byte offsets, reading at most a few blocks."""

    def __init__(self, path: Path, start: int, block: int = CHUNK_BYTES):
        self.path, self.start, self.blocks = path, start, []  # blocks: (byte start, byte end, first character)
        chars, pos, pending = 0, start, b""
        with open(path, "rb") as f:
            f.seek(start)
            while new := f.read(block):
                data = pending + new
                keep = _complete_utf8(data)
                self.blocks.append((pos, pos + keep, chars))
                chars += len(_decode(data[:keep], path, pos))
                pos, pending = pos + keep, data[keep:]
        if pending:
            _decode(pending, path, pos)  # a character cut by the end of the file
        self.num_chars = chars

    def _text(self, k: int) -> str:
        a, b, _ = self.blocks[k]
        with open(self.path, "rb") as f:
            f.seek(a)
            return f.read(b - a).decode("utf-8")

    def _block_of(self, char: int) -> int:
        lo, hi = 0, len(self.blocks) - 1
        while lo < hi:  # the last block whose first character is <= char
            mid = (lo + hi + 1) // 2
            if self.blocks[mid][2] <= char:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def find(self, char: int) -> int:
        """``text.find("\\n", char)`` on the whole file's text."""
        for k in range(self._block_of(char) if self.blocks else 0, len(self.blocks)):
            first = self.blocks[k][2]
            i = self._text(k).find("\n", max(char - first, 0))
            if i != -1:
                return first + i
        return -1

    def rfind(self, char: int) -> int:
        """``text.rfind("\\n", 0, char)`` on the whole file's text."""
        for k in range(self._block_of(max(char - 1, 0)) if self.blocks else -1, -1, -1):
            first = self.blocks[k][2]
            i = self._text(k).rfind("\n", 0, max(char - first, 0))
            if i != -1:
                return first + i
        return -1

    def byte_offset(self, char: int) -> int:
        if char >= self.num_chars:
            return self.blocks[-1][1] if self.blocks else self.start
        k = self._block_of(char)
        a, _, first = self.blocks[k]
        return a + len(self._text(k)[: char - first].encode("utf-8"))


def _strip_newlines(path: Path, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` without the line breaks at either end (``str.strip("\\n")`` on bytes)."""
    with open(path, "rb") as f:
        while start < end:
            f.seek(start)
            data = f.read(min(1 << 16, end - start))
            n = len(data) - len(data.lstrip(b"\n"))
            start += n
            if n < len(data):
                break
        while end > start:
            size = min(1 << 16, end - start)
            f.seek(end - size)
            data = f.read(size)
            n = len(data) - len(data.rstrip(b"\n"))
            end -= n
            if n < len(data):
                break
    return start, end


def split_text_file(path: Path, validation_fraction: float, block: int = CHUNK_BYTES) -> tuple[Document, Document]:
    """``split_document`` on a file, read in blocks of ``block`` bytes: (head, tail) as byte spans (BOM dropped)."""
    with open(path, "rb") as f:
        start = 3 if f.read(3) == _BOM else 0
    size = os.path.getsize(path)
    if validation_fraction <= 0:
        _CharIndex(path, start, block)  # checks the encoding
        return Document(path, start, size), Document(path, size, size)
    index = _CharIndex(path, start, block)
    cut = int(index.num_chars * (1 - validation_fraction))
    candidates = [p for p in (index.rfind(cut), index.find(cut)) if p > 0]
    if candidates:
        cut = min(candidates, key=lambda p: abs(p - cut)) + 1
    middle = index.byte_offset(cut)
    head, tail = _strip_newlines(path, start, middle), _strip_newlines(path, middle, size)
    return Document(path, *head), Document(path, *tail)


# ---- corpora ---------------------------------------------------------------------------------------
def expand_corpus_paths(train_files) -> list[Path]:
    """Files, folders (their text or table files, recursively, sorted) and glob patterns -> a list of files."""
    if isinstance(train_files, (str, os.PathLike)):
        train_files = [train_files]
    files: list[Path] = []
    for entry in train_files:
        entry = str(entry)
        if any(c in entry for c in "*?[") and not Path(entry).exists():
            matches = sorted(globlib.glob(entry, recursive=True))
            if not matches:
                raise MissingInputError(f"no file matches {entry!r}")
            files += [Path(m) for m in matches if Path(m).is_file()]
        elif Path(entry).is_dir():
            found = sorted(p for p in Path(entry).rglob("*") if p.is_file()
                           and (p.suffix in TEXT_SUFFIXES or p.suffix in TABLE_SUFFIXES))
            if not found:
                raise MissingInputError(f"{entry}: a folder with no .txt, .jsonl, .parquet or .csv file in it")
            files += found
        else:
            files.append(Path(entry))
    if not files:
        raise InputValueError("no text files given")
    return files


def file_fingerprint(files) -> list:
    """What identifies the content of ``files`` without reading them: path, size, modification time."""
    return [[str(Path(p).resolve()), os.path.getsize(p), os.stat(p).st_mtime_ns] for p in files]


class TextCorpus:
    """Documents for training and for validation, and what identifies them (the token cache's key). The documents
    are found when first asked for (a pass over text files: their validation tails), so a corpus whose tokens are
    cached is never read."""

    def __init__(self, fingerprint: dict, load, num_bytes: int):
        self.fingerprint, self._load, self.num_bytes = fingerprint, load, num_bytes

    @functools.cached_property
    def _parts(self) -> tuple:
        return self._load()

    @property
    def train(self):  # a list of Document, or a datasets.Dataset with a "text" column (one document per row)
        return self._parts[0]

    @property
    def validation(self):  # the same, or None
        return self._parts[1]


def _num_bytes(part) -> int:
    if isinstance(part, list):
        return sum(len(d) if isinstance(d, str) else d.num_bytes for d in part)
    return int(part.data.nbytes)  # a datasets.Dataset: its Arrow table


def load_text_files(paths, clean: bool, validation_fraction: float) -> TextCorpus:
    """Text files, one document each, with their validation tails (found on first use, every file checked: UTF-8,
    not empty, before anything is tokenized)."""
    for path in paths:
        if not path.exists():
            raise MissingInputError(f"text file not found: {path}")
        if path.is_dir():
            raise NotAFileError(f"expected a text file, got a folder: {path}")

    def load():
        train, validation = [], []
        for path in paths:
            if clean:
                head = Document(path, clean=True, part="head", validation_fraction=validation_fraction)
                tail = Document(path, clean=True, part="tail", validation_fraction=validation_fraction)
            else:
                head, tail = split_text_file(path, validation_fraction)
            if head.is_blank():
                if tail.is_blank():
                    raise InputValueError(f"text file is empty: {path}")
                raise InputValueError(
                    f"{path}: nothing left for training after holding out {validation_fraction:.0%}")
            train.append(head)
            if not tail.is_blank():
                validation.append(tail)
        return train, validation

    fingerprint = {"files": file_fingerprint(paths), "clean": bool(clean), "validation_fraction": validation_fraction}
    return TextCorpus(fingerprint, load, sum(os.path.getsize(p) for p in paths))


def load_table_files(paths, text_column: str, validation_fraction: float, seed: int) -> TextCorpus:
    """.jsonl / .parquet / .csv files through ``datasets``' packaged builders: one document per row."""
    import datasets

    kinds = {TABLE_SUFFIXES[p.suffix] for p in paths}
    if len(kinds) > 1:
        raise InputValueError(f"--train_files mixes {sorted(kinds)} files: pass files of one kind")
    for path in paths:
        if not path.is_file():
            raise MissingInputError(f"data file not found: {path}")
    ds = datasets.load_dataset(kinds.pop(), data_files=[str(p) for p in paths], split="train")
    return dataset_corpus(ds, text_column, validation_fraction, seed, name=[str(p) for p in paths])


def dataset_corpus(train, text_column: str = "text", validation_fraction: float = 0.05, seed: int = 42,
                   validation=None, name=None) -> TextCorpus:
    """A ``datasets.Dataset`` (one document per row of ``text_column``) held out by row unless ``validation``."""
    if text_column not in train.column_names:
        raise InputValueError(f"dataset {name or ''} has no column {text_column!r}; its columns: {train.column_names}")
    train = train.select_columns([text_column])
    if text_column != "text":
        train = train.rename_column(text_column, "text")
    if validation is None and validation_fraction > 0:
        parts = train.train_test_split(test_size=validation_fraction, seed=seed)
        train, validation = parts["train"], parts["test"]
    elif validation is not None:
        validation = validation.select_columns([text_column])
        if text_column != "text":
            validation = validation.rename_column(text_column, "text")
    fingerprint = {"dataset": [train._fingerprint, validation._fingerprint if validation is not None else None]}
    return TextCorpus(fingerprint, lambda: (train, validation),
                      sum(_num_bytes(p) for p in (train, validation) if p is not None))


def load_corpus(train_files=None, clean: bool | None = None, validation_fraction: float = 0.05,
                text_column: str = "text", seed: int = 42) -> TextCorpus:
    """``--train_files`` (default: the embedded novels, cleaned) as a corpus read in bounded chunks."""
    from .text import default_corpus_files

    if train_files is None:
        paths = default_corpus_files()
        clean = True if clean is None else clean
    else:
        paths = expand_corpus_paths(train_files)
    tables = [p for p in paths if p.suffix in TABLE_SUFFIXES]
    if tables:
        if len(tables) != len(paths):
            raise InputValueError("--train_files mixes text files and table files (.jsonl/.parquet/.csv): pass one kind")
        return load_table_files(paths, text_column, validation_fraction, seed)
    return load_text_files(paths, bool(clean), validation_fraction)


def iter_documents(part, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Iterator[str]]:
    """Each document of ``part`` (Documents, a ``datasets.Dataset`` or strings) as an iterator of text pieces;
    empty and blank rows of a dataset are skipped."""
    if isinstance(part, list):
        for doc in part:
            yield doc.chunks(chunk_bytes) if isinstance(doc, Document) else Document(text=doc).chunks(chunk_bytes)
        return
    for batch in part.iter(batch_size=1000):
        for text in batch["text"]:
            if text and text.strip():
                yield Document(text=text).chunks(chunk_bytes)


def sample_text(part, max_bytes: float, chunk_bytes: int = 1 << 20) -> Iterator[str]:
    """A bounded sample of ``part`` for training a tokenizer: all of it up to ``max_bytes``; beyond, evenly spaced
    pieces of about ``chunk_bytes`` adding up to about ``max_bytes``."""
    fraction = min(1.0, max_bytes / max(_num_bytes(part), 1))
    taken = seen = 0
    for doc in iter_documents(part, chunk_bytes):
        for piece in doc:
            seen += 1
            if fraction >= 1 or int(seen * fraction) > taken:
                taken += 1
                yield piece


__all__ = ["CHUNK_BYTES", "Document", "TextCorpus", "dataset_corpus", "expand_corpus_paths", "file_fingerprint",
           "iter_documents", "last_safe_cut", "load_corpus", "sample_text", "split_at_safe_cuts",
           "split_document", "split_text_file"]
