"""The on-disk token cache: a corpus tokenized once, then memory-mapped by every run and every process.

    CACHE_DIR/<key>/train.bin       the training documents' ids, each followed by [EOS], fixed width (uint16 when the
                                    vocabulary fits, else uint32)
                    validation.bin  the same for the validation documents
                    meta.json       what was cached (counts, dtype, characters) and a CRC-32 of each .bin

``key`` hashes the corpus's fingerprint (file paths, sizes, modification times, cleaning, validation split; or a
``datasets`` fingerprint), the tokenizer (its whole ``tokenizer.json``) and this format's version: change any of
them and a new cache is built. The local main process builds it: text read in bounded chunks (``corpus.py``),
encoded by ``tokenizers``' ``encode_batch_fast`` on every core, written into a temporary folder that is renamed into
place when complete (atomic). Other processes wait for the folder, then map it. Every process checks the sizes and
CRCs before it reads a cache: a half-written or corrupt one is never read (the main process rebuilds it).

    CACHE_DIR/tokenizers/<key>/     a tokenizer trained on a corpus (``open_tokenizer_cache``): its
                                    ``save_pretrained`` files and meta.json (their SHA-256), keyed by the corpus's
                                    fingerprint and every training setting, written and checked the same way
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .corpus import CHUNK_BYTES, TextCorpus, iter_documents, split_at_safe_cuts

FORMAT_VERSION = 1
SPLITS = ("train", "validation")
CACHE_ENV = "HF_GPTLITE_TOKEN_CACHE"


def default_cache_dir() -> Path:
    """``$HF_GPTLITE_TOKEN_CACHE``, else ``$HF_HOME/hf_gptlite/token_cache``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    from huggingface_hub.constants import HF_HOME

    return Path(HF_HOME) / "hf_gptlite" / "token_cache"


# ---- encoding ------------------------------------------------------------------------------------
class _Encoder:
    """A picklable ``token_encoder`` (DataLoader workers started with ``spawn`` receive it)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, texts):
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None or not hasattr(backend, "encode_batch_fast"):
            return self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        # "[EOS]" typed in a document stays text
        backend.encode_special_tokens = bool(getattr(self.tokenizer, "split_special_tokens", False))
        return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]


def token_encoder(tokenizer):
    """texts -> lists of ids, without special tokens, as ``tokenizer(texts, add_special_tokens=False)`` gives them;
    through the ``tokenizers`` backend's ``encode_batch_fast`` (all cores) when there is one."""
    return _Encoder(tokenizer)


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    described = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    extra = [type(tokenizer).__name__, tokenizer.eos_token_id, bool(getattr(tokenizer, "split_special_tokens", False))]
    return hashlib.sha256((described + json.dumps(extra)).encode()).hexdigest()


def token_dtype(tokenizer) -> np.dtype:
    return np.dtype(np.uint16 if len(tokenizer) <= 1 << 16 else np.uint32)


def encode_documents(documents, encode, eos_id: int, dtype, write, progress=None,
                     batch_chars: int = CHUNK_BYTES) -> dict:
    """Encode ``documents`` (each an iterator of text pieces ending at safe cuts) batch by batch, each document's
    ids followed by ``eos_id``; ``write(array)`` receives the ids in order. Returns counts: tokens, documents,
    characters (+1 per document: its [EOS] is one predicted symbol, for bits per character)."""
    counts = {"tokens": 0, "documents": 0, "characters": 0}
    pieces: list[str] = []
    ends: list[bool] = []  # whether the piece ends its document ([EOS] after it)

    def flush():
        ids = encode(pieces)
        out = np.empty(sum(map(len, ids)) + sum(ends), dtype=dtype)
        pos = 0
        for piece_ids, end in zip(ids, ends, strict=True):
            out[pos : pos + len(piece_ids)] = piece_ids
            pos += len(piece_ids)
            if end:
                out[pos] = eos_id
                pos += 1
        write(out)
        counts["tokens"] += len(out)
        pieces.clear()
        ends.clear()

    buffered = 0
    for document in documents:
        n = 0
        for chunk in document:
            if buffered >= batch_chars:  # flushed before a document's next piece: its last one stays buffered
                flush()
                buffered = 0
            for piece in split_at_safe_cuts(chunk):
                pieces.append(piece)
                ends.append(False)
                n += 1
            buffered += len(chunk)
            counts["characters"] += len(chunk)
            if progress is not None:
                progress.update(len(chunk.encode("utf-8")))
        if n == 0:
            pieces.append("")  # an empty document: its [EOS] alone
            ends.append(False)
        ends[-1] = True
        counts["documents"] += 1
        counts["characters"] += 1
    if pieces:
        flush()
    return counts


def encode_in_memory(documents, tokenizer) -> tuple[np.ndarray, dict]:
    """``encode_documents`` into one array in memory (a small corpus: lists of strings)."""
    parts: list[np.ndarray] = []
    counts = encode_documents(documents, token_encoder(tokenizer), tokenizer.eos_token_id, token_dtype(tokenizer),
                              parts.append)
    dtype = token_dtype(tokenizer)
    return (np.concatenate(parts) if parts else np.zeros(0, dtype)), counts


# ---- the cache -----------------------------------------------------------------------------------
@dataclass
class TokenCache:
    folder: Path
    meta: dict

    def tokens(self, split: str) -> np.ndarray | None:
        """The ids of ``split`` (memory-mapped, read-only), None when it has no document."""
        n = self.meta[split]["tokens"]
        if n == 0:
            return None
        return np.memmap(self.folder / f"{split}.bin", dtype=self.meta["dtype"], mode="r", shape=(n,))


def folder_key(material) -> str:
    """A cache folder's name: a short hash of ``material`` (anything JSON can write)."""
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]


def cache_key(corpus: TextCorpus, tokenizer) -> str:
    return folder_key({"version": FORMAT_VERSION, "corpus": corpus.fingerprint,
                       "tokenizer": tokenizer_fingerprint(tokenizer)})


@contextlib.contextmanager
def atomic_folder(folder: Path):
    """A temporary folder beside ``folder`` to write into, renamed to ``folder`` when the block completes (atomic: it
    appears complete or not at all; when another process renamed its own first, this one is dropped); removed when
    the block raises."""
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        yield tmp
        try:
            tmp.rename(folder)
        except OSError:  # another process built the same cache meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def open_cache_folder(folder: Path, check, build, builder: bool, log, what: str, poll_s: float = 0.5) -> bool:
    """Return once ``folder`` holds an intact cache (``check(folder)`` is None: why not, otherwise). A ``builder``
    moves a damaged one aside and calls ``build(folder)`` (which writes it atomically); other processes wait for it.
    True when it was built here."""
    waited, built = time.monotonic(), False
    while True:
        if folder.exists():
            problem = check(folder)
            if problem is None:
                return built
            if builder:
                log(f"{what}: {folder} is damaged ({problem}): rebuilding it")
                aside = folder.with_name(f"{folder.name}.damaged-{uuid.uuid4().hex[:8]}")
                folder.rename(aside)
                shutil.rmtree(aside, ignore_errors=True)
        if builder:
            folder.parent.mkdir(parents=True, exist_ok=True)
            build(folder)
            built = True
            continue  # checked like any other cache before it is read
        if time.monotonic() - waited > 60:
            log(f"{what}: waiting for the main process to build {folder} ...")
            waited = time.monotonic()
        time.sleep(poll_s)


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(16 << 20):
            crc = zlib.crc32(block, crc)
    return crc


def check_cache(folder: Path) -> str | None:
    """Why the cache in ``folder`` cannot be read (None: it is complete and intact)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("version") != FORMAT_VERSION:
            return f"format version {meta.get('version')} (this code reads {FORMAT_VERSION})"
        width = np.dtype(meta["dtype"]).itemsize
        for split in SPLITS:
            path, info = folder / f"{split}.bin", meta[split]
            if path.stat().st_size != info["tokens"] * width:
                return f"{path.name} has {path.stat().st_size} bytes, meta.json says {info['tokens'] * width}"
            if _crc32(path) != info["crc32"]:
                return f"{path.name} does not match its CRC-32"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def _build(corpus: TextCorpus, tokenizer, folder: Path, log) -> None:
    """Tokenize ``corpus`` into a temporary folder, then rename it to ``folder``."""
    from tqdm.auto import tqdm

    dtype = token_dtype(tokenizer)
    encode = token_encoder(tokenizer)
    _check_chunking(corpus, encode)
    meta = {"version": FORMAT_VERSION, "dtype": dtype.name, "corpus": corpus.fingerprint,
            "tokenizer": tokenizer_fingerprint(tokenizer), "eos_token_id": tokenizer.eos_token_id}
    total = corpus.num_bytes
    start = time.perf_counter()
    with atomic_folder(folder) as tmp, tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing",
                                            mininterval=2, disable=None, file=sys.stderr) as progress:
        for split, part in zip(SPLITS, (corpus.train, corpus.validation), strict=True):
            with open(tmp / f"{split}.bin", "wb") as f:
                crc = 0

                def write(ids, f=f):
                    nonlocal crc
                    data = ids.tobytes()
                    crc = zlib.crc32(data, crc)
                    f.write(data)

                counts = {"tokens": 0, "documents": 0, "characters": 0}
                if part is not None:
                    counts = encode_documents(iter_documents(part), encode, tokenizer.eos_token_id, dtype, write,
                                              progress)
                f.flush()
                os.fsync(f.fileno())
            meta[split] = {**counts, "crc32": crc}
        seconds = time.perf_counter() - start
        meta.update(seconds=round(seconds, 3), bytes=total)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    tokens = meta["train"]["tokens"] + meta["validation"]["tokens"]
    log(f"token cache: {tokens:,} tokens from {total / 1e6:.1f} MB of text in {seconds:.1f} s "
        f"({total / 1e6 / max(seconds, 1e-9):.1f} MB/s) -> {folder}")


def _check_chunking(corpus: TextCorpus, encode) -> None:
    """Warn when this tokenizer's ids depend on text across a line break (then chunks may differ, slightly, from
    whole documents): two pieces of the first document, encoded apart and together."""
    first = next(iter(iter_documents(corpus.train, chunk_bytes=1 << 16)), None)
    chunk = next(first, "") if first is not None else ""
    pieces = split_at_safe_cuts(chunk[: 1 << 15], size=1 << 12)[:2]
    if len(pieces) == 2:
        apart = encode(pieces)
        if apart[0] + apart[1] != encode(["".join(pieces)])[0]:
            warnings.warn("this tokenizer encodes text across a line break differently from the text on each side: "
                          "the token cache's ids may differ slightly from encoding whole documents", stacklevel=3)


def open_token_cache(corpus: TextCorpus, tokenizer, cache_dir=None, builder: bool = True, log=print,
                     poll_s: float = 0.5) -> TokenCache:
    """The cache of ``corpus`` tokenized by ``tokenizer`` under ``cache_dir``: checked and mapped when it exists;
    built when it does not (or is corrupt) and ``builder`` is set (the local main process); otherwise waited for."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = cache_dir / cache_key(corpus, tokenizer)
    built = open_cache_folder(folder, check_cache, lambda f: _build(corpus, tokenizer, f, log), builder, log,
                              "token cache", poll_s)
    meta = json.loads((folder / "meta.json").read_text())
    if builder and not built:
        log(f"token cache: reusing {folder} ({meta['train']['tokens']:,} training tokens)")
    return TokenCache(folder, meta)


# ---- a tokenizer trained on a corpus, cached beside its tokens ----------------------------------------
TOKENIZER_FORMAT_VERSION = 1
TOKENIZERS_DIR = "tokenizers"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_tokenizer_cache(folder: Path) -> str | None:
    """Why the tokenizer in ``folder`` cannot be loaded (None: every file is there and matches meta.json)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("version") != TOKENIZER_FORMAT_VERSION:
            return f"format version {meta.get('version')} (this code reads {TOKENIZER_FORMAT_VERSION})"
        for name, digest in meta["files"].items():
            if _sha256(folder / name) != digest:
                return f"{name} does not match its SHA-256"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def open_tokenizer_cache(corpus: TextCorpus, settings: dict, train, cache_dir=None, builder: bool = True, log=print,
                         poll_s: float = 0.5):
    """The tokenizer ``train()`` trains on ``corpus`` with ``settings`` (every setting that changes it), cached in
    ``cache_dir/tokenizers/<key>`` (the key: the corpus's fingerprint, ``settings`` and the format version): loaded
    when it is there, trained once and written atomically when it is not and ``builder`` is set, else waited for. A
    reused tokenizer reads no text. Returns it loaded from the cache, the same object on the first and later runs."""
    from transformers import AutoTokenizer

    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    material = {"version": TOKENIZER_FORMAT_VERSION, "corpus": corpus.fingerprint, "settings": settings}
    folder = cache_dir / TOKENIZERS_DIR / folder_key(material)

    def build(folder: Path) -> None:
        start = time.perf_counter()
        tokenizer = train()
        with atomic_folder(folder) as tmp:
            tokenizer.save_pretrained(tmp)
            files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            seconds = round(time.perf_counter() - start, 3)
            (tmp / "meta.json").write_text(json.dumps({**material, "files": files, "seconds": seconds}, indent=1))
        log(f"tokenizer: trained in {seconds:.1f} s -> {folder}")

    if not open_cache_folder(folder, check_tokenizer_cache, build, builder, log, "tokenizer", poll_s) and builder:
        log(f"tokenizer: reusing {folder}")
    return AutoTokenizer.from_pretrained(folder)


__all__ = ["TokenCache", "atomic_folder", "cache_key", "check_cache", "check_tokenizer_cache", "default_cache_dir",
           "encode_documents", "encode_in_memory", "folder_key", "open_cache_folder", "open_token_cache",
           "open_tokenizer_cache", "token_dtype", "token_encoder", "tokenizer_fingerprint"]
