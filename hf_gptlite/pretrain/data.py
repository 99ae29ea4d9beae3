"""Language-model data: documents -> token ids (once, cached on disk) -> context-length blocks read by index.

    a corpus (data/corpus.py: text files read in bounded chunks, .jsonl/.parquet rows, a Hub dataset)
      -> validation held out BY DOCUMENT (the last part of each local file; whole rows of a dataset)
      -> the token cache (data/token_cache.py): doc1 [EOS] doc2 [EOS] ..., built once, memory-mapped by every process
      -> train:      blocks of ``block_size`` cut one after the other (the tail is dropped), read by index
                     (``TrainBlocks``: a map-style dataset, so accelerate shards it and resumes it like any other)
      -> validation: [EOS] doc1 [EOS] doc2 [EOS] ... cut into blocks that overlap by one token, the last one
                     padded (labels -100), so every token after the first is predicted exactly once (``EvalBlocks``)

A streamed Hub corpus (``--streaming``) is tokenized and packed on the fly (``StreamedBlocks``), in the DataLoader's
workers. Bits per character need the validation text's length: ``LMData.eval_num_characters`` counts the
characters of the validation documents plus one per ``[EOS]`` (each document's end is one predicted symbol),
counted while they are tokenized.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.corpus import (
    Document,
    TextCorpus,
    dataset_corpus,
    iter_documents,
    load_corpus,
    sample_text,
    split_document,
)
from ..data.token_cache import encode_in_memory, open_token_cache, token_encoder
from ..errors import InputValueError

logger = logging.getLogger(__name__)


@dataclass
class LMData:
    train: torch.utils.data.Dataset  # items {"input_ids", "labels"}: (block_size,) int64 each
    validation: torch.utils.data.Dataset | None
    eval_num_characters: int | None  # characters scored by the validation set (for bits per character)


# ---- blocks read by index from an array of ids (a memory-mapped cache, or an array in memory) -------------
class _Blocks(torch.utils.data.Dataset):
    def __init__(self, tokens: np.ndarray, block_size: int):
        self.block_size = block_size
        self._tokens = tokens
        # a memory map travels to spawned DataLoader workers as its file, not its contents
        self._file = (tokens.filename, tokens.dtype.name, len(tokens)) if isinstance(tokens, np.memmap) else None

    @property
    def tokens(self) -> np.ndarray:
        if self._tokens is None:
            path, dtype, n = self._file
            self._tokens = np.memmap(path, dtype=dtype, mode="r", shape=(n,))
        return self._tokens

    def __getstate__(self):
        return {**self.__dict__, "_tokens": None} if self._file else self.__dict__

    def __getitem__(self, index):
        if isinstance(index, slice):  # a stacked batch (inspection, tests)
            items = [self[i] for i in range(len(self))[index]]
            return {k: torch.stack([item[k] for item in items]) for k in ("input_ids", "labels")}
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"block {index} of {len(self)}")
        return self._block(index)


class TrainBlocks(_Blocks):
    """Training blocks: ids ``[i * block_size, (i + 1) * block_size)``; labels = input_ids (the model shifts)."""

    def __len__(self) -> int:
        return len(self.tokens) // self.block_size

    def _block(self, i: int) -> dict:
        ids = torch.from_numpy(self.tokens[i * self.block_size : (i + 1) * self.block_size].astype(np.int64))
        return {"input_ids": ids, "labels": ids}


class EvalBlocks(_Blocks):
    """Validation blocks over ``[EOS] + tokens``, overlapping by one token (stride ``block_size - 1``), the last one
    padded; a block's first label is -100 after the first block (the previous block predicted it)."""

    def __init__(self, tokens: np.ndarray, block_size: int, eos_id: int, pad_id: int):
        super().__init__(tokens, block_size)
        self.eos_id, self.pad_id = eos_id, pad_id

    def __len__(self) -> int:
        return -(-len(self.tokens) // (self.block_size - 1))

    def _block(self, i: int) -> dict:
        start = i * (self.block_size - 1)  # in [EOS] + tokens
        ids = self.tokens[max(start - 1, 0) : start - 1 + self.block_size].astype(np.int64)
        if start == 0:
            ids = np.concatenate([[self.eos_id], ids])
        n = len(ids)
        input_ids = torch.full((self.block_size,), self.pad_id, dtype=torch.int64)
        labels = torch.full((self.block_size,), -100, dtype=torch.int64)
        input_ids[:n] = labels[:n] = torch.from_numpy(ids)
        if i > 0:
            labels[0] = -100
        return {"input_ids": input_ids, "labels": labels}


# ---- a streamed corpus: tokenized and packed on the fly ---------------------------------------------
class StreamedBlocks(torch.utils.data.IterableDataset):
    """Training blocks of a streamed ``datasets.IterableDataset`` (column ``text``): documents tokenized in batches
    and packed as ``TrainBlocks`` packs them (doc [EOS] doc [EOS] ..., the remainder carried into the next batch).
    Runs in the DataLoader's workers when it has some; ``set_epoch`` reshuffles the stream."""

    def __init__(self, dataset, tokenizer, block_size: int, rows_per_batch: int = 64):
        self.dataset, self.block_size, self.rows_per_batch = dataset, block_size, rows_per_batch
        self.encode, self.eos_id = token_encoder(tokenizer), tokenizer.eos_token_id

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __iter__(self):
        buffer = np.zeros(0, dtype=np.int64)
        for batch in self.dataset.iter(batch_size=self.rows_per_batch):
            texts = [t for t in batch["text"] if t and t.strip()]
            if not texts:
                continue
            ids = self.encode(texts)
            stream = np.fromiter((t for doc in ids for t in (*doc, self.eos_id)), dtype=np.int64)
            buffer = np.concatenate([buffer, stream])
            n = len(buffer) // self.block_size
            for i in range(n):
                block = torch.from_numpy(buffer[i * self.block_size : (i + 1) * self.block_size].copy())
                yield {"input_ids": block, "labels": block}
            buffer = buffer[n * self.block_size :]


# ---- building the data ------------------------------------------------------------------------------
def load_text_documents(train_files=None, clean: bool | None = None,
                        validation_fraction: float = 0.05) -> tuple[list[str], list[str]]:
    """Local text files (default: the embedded novels) -> (train documents, validation documents), in memory.

    Each file's last ``validation_fraction`` (cut at a line break) is held out, so validation text is never seen in
    training, and every file is represented in both. ``clean`` (default: only for the embedded novels) applies
    ``clean_book_text``. Missing or empty files raise an error naming the file. (A large corpus: ``load_corpus``.)
    """
    corpus = load_corpus(train_files, clean, validation_fraction)
    return (["".join(doc) for doc in iter_documents(corpus.train)],
            ["".join(doc) for doc in iter_documents(corpus.validation)])


def load_hub_documents(
    name: str, config_name: str | None = None, text_column: str = "text", streaming: bool = False,
    validation_fraction: float = 0.05, validation_documents: int = 1000, seed: int = 42,
):
    """A ``datasets`` corpus -> (train dataset, validation dataset) of whole documents (one per row).

    Uses its ``validation`` split when it has one; otherwise holds out ``validation_fraction`` of the rows
    (streaming: the first ``validation_documents`` rows).
    """
    from ..loading import resolve_source

    resolve_source(name, "dataset", repo_type="dataset")  # a local path, or a Hub id whose Hub answers
    splits = datasets.get_dataset_split_names(name, config_name) if not streaming else None
    load = dict(path=name, name=config_name, streaming=streaming)
    train = datasets.load_dataset(split="train", **load)
    if text_column not in (train.column_names or [text_column]):
        raise InputValueError(f"dataset {name} has no column {text_column!r}; its columns: {train.column_names}")
    train = train.select_columns([text_column])
    if text_column != "text":
        train = train.rename_column(text_column, "text")
    if splits and "validation" in splits:
        val = datasets.load_dataset(split="validation", **load).select_columns([text_column])
        val = val.rename_column(text_column, "text") if text_column != "text" else val
    elif streaming:
        val = datasets.Dataset.from_list(list(train.take(validation_documents)))
        train = train.skip(validation_documents)
    else:
        parts = train.train_test_split(test_size=validation_fraction, seed=seed)
        train, val = parts["train"], parts["test"]
    if streaming:
        train = train.shuffle(seed=seed, buffer_size=10_000)
    return train, val


def _special_ids(tokenizer) -> tuple[int, int]:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise InputValueError("the tokenizer has no eos_token: packing needs one to separate documents")
    return eos, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos


def _lm_data(train_ids, val_ids, characters, block_size: int, tokenizer) -> LMData:
    eos, pad = _special_ids(tokenizer)
    train = TrainBlocks(train_ids, block_size) if train_ids is not None else None
    if train is None or len(train) == 0:
        raise InputValueError(f"the training text is shorter than one block of {block_size} tokens; "
                              "add text or lower block_size")
    validation = EvalBlocks(val_ids, block_size, eos, pad) if val_ids is not None and len(val_ids) else None
    return LMData(train, validation, characters if validation is not None else None)


def lm_data_from_corpus(corpus: TextCorpus, tokenizer, block_size: int, cache_dir=None, builder: bool = True,
                        log=print) -> LMData:
    """Blocks of ``corpus`` read from its token cache (built here when ``builder`` and missing, else waited for)."""
    _special_ids(tokenizer)
    cache = open_token_cache(corpus, tokenizer, cache_dir, builder=builder, log=log)
    return _lm_data(cache.tokens("train"), cache.tokens("validation"), cache.meta["validation"]["characters"],
                    block_size, tokenizer)


def _encode_texts(texts, tokenizer) -> tuple[np.ndarray, dict]:
    return encode_in_memory(iter_documents([Document(text=t) for t in texts if t and t.strip()]), tokenizer)


def build_lm_data(tokenizer, block_size: int, train_docs=None, val_docs=None, train_dataset=None, val_dataset=None,
                  cache_dir=None) -> LMData:
    """Blocks of documents given in memory (lists of strings: tokenized in memory), ``datasets`` with a ``text``
    column (through the token cache in ``cache_dir``), or a streamed ``IterableDataset`` for training."""
    eos, pad = _special_ids(tokenizer)
    if isinstance(train_dataset, datasets.IterableDataset):
        val_texts = val_docs if val_docs is not None else val_dataset["text"] if val_dataset is not None else []
        val_ids, counts = _encode_texts(val_texts, tokenizer)
        validation = EvalBlocks(val_ids, block_size, eos, pad) if len(val_ids) else None
        return LMData(StreamedBlocks(train_dataset, tokenizer, block_size), validation,
                      counts["characters"] if validation is not None else None)
    if train_dataset is not None:
        corpus = dataset_corpus(train_dataset, validation=val_dataset, validation_fraction=0)
        return lm_data_from_corpus(corpus, tokenizer, block_size, cache_dir)
    train_ids, _ = _encode_texts(train_docs, tokenizer)
    if not len(train_ids):
        raise InputValueError("no text to tokenize: every document is empty")
    val_ids, counts = _encode_texts(val_docs or [], tokenizer)
    return _lm_data(train_ids, val_ids, counts["characters"], block_size, tokenizer)


def check_block_size(block_size: int, max_position_embeddings: int) -> None:
    if block_size < 2:
        raise InputValueError(f"block_size must be at least 2 tokens, got {block_size}")
    if block_size > max_position_embeddings:
        raise InputValueError(
            f"block_size={block_size} is longer than the model's context (max_position_embeddings="
            f"{max_position_embeddings}); lower block_size or raise max_position_embeddings"
        )


def lm_dataloaders(data: LMData, batch_size: int, eval_batch_size: int | None = None, seed: int = 42,
                   num_workers: int = 0):
    """DataLoaders over blocks: shuffled train batches (full batches only), in-order eval batches. A streamed
    training set is tokenized in ``num_workers`` worker processes."""
    streamed = isinstance(data.train, torch.utils.data.IterableDataset)
    train = DataLoader(data.train, batch_size=batch_size, shuffle=not streamed, drop_last=True,
                       generator=None if streamed else torch.Generator().manual_seed(seed),
                       num_workers=num_workers if streamed else 0, persistent_workers=False)
    val = None
    if data.validation is not None:
        val = DataLoader(data.validation, batch_size=eval_batch_size or batch_size, shuffle=False)
    return train, val


__all__ = [
    "EvalBlocks", "LMData", "StreamedBlocks", "TrainBlocks", "build_lm_data", "check_block_size", "dataset_corpus",
    "lm_data_from_corpus", "lm_dataloaders", "load_corpus", "load_hub_documents", "load_text_documents",
    "sample_text", "split_document",
]
