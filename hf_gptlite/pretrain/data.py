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

import hashlib
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
    """Training blocks of a streamed ``datasets.IterableDataset`` (column ``text``), tokenized and packed on the fly
    as ``TrainBlocks`` packs them (doc [EOS] doc [EOS] ..., the remainder carried on), in the DataLoader's workers
    when it has some (each worker reads its own shards of the stream).

    With ``num_processes > 1`` each process reads its own part, so ``split_by_process`` tells the training loop not
    to shard or dispatch it again: its own shards when their number divides evenly (``IterableDataset.shard``, the
    same shards every epoch, as nanochat's ranks keep their row groups; ``split_dataset_by_node`` would deal the
    shards out anew each epoch, so with uneven shards two processes in different epochs could read the same one),
    else every ``num_processes``-th row (``split_dataset_by_node``). ``set_epoch`` reshuffles the stream (seeded):
    a resumed run replays it from the start of the epoch and skips the batches already trained on."""

    split_by_process = True

    def __init__(self, dataset, tokenizer, block_size: int, process_index: int = 0, num_processes: int = 1,
                 rows_per_batch: int = 64):
        from datasets.distributed import split_dataset_by_node

        if num_processes > 1:
            if dataset.num_shards % num_processes == 0:
                dataset = dataset.shard(num_shards=num_processes, index=process_index, contiguous=False)
            else:
                dataset = split_dataset_by_node(dataset, rank=process_index, world_size=num_processes)
        self.dataset, self.block_size, self.rows_per_batch = dataset, block_size, rows_per_batch
        self.encode, self.eos_id = token_encoder(tokenizer), tokenizer.eos_token_id

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def _documents(self):
        texts = []
        for row in self.dataset:  # in a DataLoader worker: that worker's shards
            if row["text"] and row["text"].strip():
                texts.append(row["text"])
            if len(texts) == self.rows_per_batch:
                yield from self.encode(texts)
                texts = []
        if texts:
            yield from self.encode(texts)

    def __iter__(self):
        buffer: list[int] = []
        for ids in self._documents():
            buffer += ids
            buffer.append(self.eos_id)
            n = len(buffer) // self.block_size * self.block_size
            if n:
                blocks = torch.tensor(buffer[:n], dtype=torch.int64).view(-1, self.block_size)
                yield from ({"input_ids": block, "labels": block} for block in blocks)
                del buffer[:n]


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


class _NotHeldOut:
    """A picklable filter (spawned DataLoader workers receive it): whether a row's text is none of ``texts``."""

    def __init__(self, texts):
        self.digests = {self.digest(t) for t in texts}

    @staticmethod
    def digest(text) -> bytes:
        return hashlib.blake2b((text or "").encode(), digest_size=16).digest()

    def __call__(self, text) -> bool:
        return self.digest(text) not in self.digests


def load_hub_documents(
    name: str, config_name: str | None = None, text_column: str = "text", streaming: bool = False,
    validation_fraction: float = 0.05, validation_documents: int = 1000, seed: int = 42,
):
    """A ``datasets`` corpus -> (train dataset, validation dataset) of whole documents (one per row).

    Uses its ``validation`` split when it has one (streaming: its first ``validation_documents`` rows); otherwise
    holds out ``validation_fraction`` of the rows (streaming: the first ``validation_documents`` rows, and training
    rows equal to one of them are dropped: on a stream split over processes and DataLoader workers ``datasets``'
    ``skip(n)`` skips n/k rows of each of the k parts, not the first n rows).
    """
    from ..loading import resolve_source

    resolve_source(name, "dataset", repo_type="dataset")  # a local path, or a Hub id whose Hub answers
    splits = datasets.get_dataset_split_names(name, config_name)
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
        if streaming:  # its first validation_documents rows, in memory
            val = datasets.Dataset.from_list(list(val.take(validation_documents)))
    elif streaming:
        val = datasets.Dataset.from_list(list(train.take(validation_documents)))
        train = train.filter(_NotHeldOut(val["text"]), input_columns="text")
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
                  cache_dir=None, process_index: int = 0, num_processes: int = 1) -> LMData:
    """Blocks of documents given in memory (lists of strings: tokenized in memory), ``datasets`` with a ``text``
    column (through the token cache in ``cache_dir``), or a streamed ``IterableDataset`` for training (each of
    ``num_processes`` processes reading its own part)."""
    eos, pad = _special_ids(tokenizer)
    if isinstance(train_dataset, datasets.IterableDataset):
        val_texts = val_docs if val_docs is not None else val_dataset["text"] if val_dataset is not None else []
        val_ids, counts = _encode_texts(val_texts, tokenizer)
        validation = EvalBlocks(val_ids, block_size, eos, pad) if len(val_ids) else None
        train = StreamedBlocks(train_dataset, tokenizer, block_size, process_index, num_processes)
        return LMData(train, validation,
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
    training set is tokenized in ``num_workers`` worker processes, started with ``spawn``: a forked worker inherits
    the parent's thread pools (tokenizers, ONNX Runtime, OpenVINO...) mid-use, and that crashes."""
    streamed = isinstance(data.train, torch.utils.data.IterableDataset)
    workers = num_workers if streamed else 0
    train = DataLoader(data.train, batch_size=batch_size, shuffle=not streamed, drop_last=True,
                       generator=None if streamed else torch.Generator().manual_seed(seed),
                       num_workers=workers, persistent_workers=False,
                       multiprocessing_context="spawn" if workers else None)
    val = None
    if data.validation is not None:
        val = DataLoader(data.validation, batch_size=eval_batch_size or batch_size, shuffle=False)
    return train, val


__all__ = [
    "EvalBlocks", "LMData", "StreamedBlocks", "TrainBlocks", "build_lm_data", "check_block_size", "dataset_corpus",
    "lm_data_from_corpus", "lm_dataloaders", "load_corpus", "load_hub_documents", "load_text_documents",
    "sample_text", "split_document",
]
