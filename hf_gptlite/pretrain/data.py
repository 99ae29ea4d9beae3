"""Language-model data: documents -> tokens -> packed context-length blocks, with ``datasets``.

    local text files (one document each) or a Hub dataset (one document per row)
      -> validation held out BY DOCUMENT (the last part of each local file; whole rows of a Hub dataset)
      -> tokenizer (batched ``map``, cached by ``datasets`` for Hub data)
      -> train:      doc1 [EOS] doc2 [EOS] ... cut into blocks of ``block_size`` (the tail is dropped)
      -> validation: [EOS] doc1 [EOS] doc2 [EOS] ... cut into blocks that overlap by one token, the last one
                     padded (labels -100), so every token after the first is predicted exactly once

Bits per character need the validation text's length: ``LMData.eval_num_characters`` counts the characters of
the validation documents plus one per ``[EOS]`` (each document's end is one predicted symbol).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from torch.utils.data import DataLoader

from ..errors import InputValueError


@dataclass
class LMData:
    train: datasets.Dataset | datasets.IterableDataset  # columns input_ids, labels: (block_size,) each
    validation: datasets.Dataset | None
    eval_num_characters: int | None  # characters scored by the validation set (for bits per character)
    train_texts: list[str] | None  # the training documents when they fit in memory (to train a tokenizer)


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


def load_text_documents(
    train_files=None, clean: bool | None = None, validation_fraction: float = 0.05
) -> tuple[list[str], list[str]]:
    """Local text files (default: the embedded novels) -> (train documents, validation documents).

    Each file's last ``validation_fraction`` (cut at a line break) is held out, so validation text is
    never seen in training, and every file is represented in both. ``clean`` (default: only for the embedded
    novels) applies ``clean_book_text``. Missing or empty files raise an error naming the file.
    """
    from ..data.text import clean_book_text, default_corpus_files, read_text_files

    if train_files is None:
        train_files = default_corpus_files()
        clean = True if clean is None else clean
    texts = read_text_files([Path(p) for p in train_files])
    if clean:
        texts = [clean_book_text(t) for t in texts]
    train_docs, val_docs = [], []
    for path, text in zip(train_files, texts, strict=False):
        head, tail = split_document(text, validation_fraction)
        if not head.strip():
            raise InputValueError(f"{path}: nothing left for training after holding out {validation_fraction:.0%}")
        train_docs.append(head)
        if tail.strip():
            val_docs.append(tail)
    return train_docs, val_docs


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


def _tokenize(tokenizer):
    def fn(batch):
        texts = [t for t in batch["text"] if t and t.strip()]
        ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return {"input_ids": ids, "num_characters": [len(t) for t in texts]}

    return fn


def _pack_train(block_size: int, eos_id: int):
    def fn(batch):
        stream = [t for ids in batch["input_ids"] for t in (*ids, eos_id)]
        n = len(stream) // block_size * block_size
        blocks = [stream[i : i + block_size] for i in range(0, n, block_size)]
        return {"input_ids": blocks, "labels": blocks}

    return fn


def _pack_eval(block_size: int, eos_id: int, pad_id: int):
    def fn(batch):
        stream = [eos_id] + [t for ids in batch["input_ids"] for t in (*ids, eos_id)]
        stride = block_size - 1  # consecutive blocks share one token: the context of the next prediction
        inputs, labels = [], []
        for start in range(0, len(stream) - 1, stride):
            block = stream[start : start + block_size]
            target = list(block)
            if start > 0:
                target[0] = -100  # predicted by the previous block already (a first label is never scored anyway)
            pad = block_size - len(block)
            inputs.append(block + [pad_id] * pad)
            labels.append(target + [-100] * pad)
        return {"input_ids": inputs, "labels": labels}

    return fn


def tokenize_and_pack(ds, tokenizer, block_size: int, train: bool, num_proc: int | None = None):
    """Documents (column ``text``) -> packed blocks (``input_ids``, ``labels``). Returns (dataset, characters)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise InputValueError("the tokenizer has no eos_token: packing needs one to separate documents")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    columns = ds.column_names
    map_kw = dict(batched=True)
    if isinstance(ds, datasets.Dataset):
        map_kw.update(num_proc=num_proc, desc="tokenizing")
    tokens = ds.map(_tokenize(tokenizer), remove_columns=columns, **map_kw)
    characters = None
    if isinstance(tokens, datasets.Dataset):
        characters = sum(tokens["num_characters"]) + len(tokens)  # + one [EOS] per document
        if len(tokens) == 0:
            raise InputValueError("no text to tokenize: every document is empty")
    tokens = tokens.remove_columns(["num_characters"])
    pack = _pack_train(block_size, eos) if train else _pack_eval(block_size, eos, pad)
    if isinstance(tokens, datasets.Dataset):
        map_kw["desc"] = f"packing into blocks of {block_size}"
        # the eval packer needs one stream per map batch for exact counting: one batch = the whole set
        if not train:
            map_kw["batch_size"] = None
    blocks = tokens.map(pack, remove_columns=["input_ids"], **map_kw)
    if isinstance(blocks, datasets.Dataset) and len(blocks) == 0:
        raise InputValueError(
            f"the {'training' if train else 'validation'} text is shorter than one block of {block_size} tokens; "
            "add text or lower block_size"
        )
    return blocks.with_format("torch"), characters


def build_lm_data(
    tokenizer, block_size: int, train_docs=None, val_docs=None, train_dataset=None, val_dataset=None,
    num_proc: int | None = None,
) -> LMData:
    """Pack documents (lists of strings, or ``datasets`` with a ``text`` column) into train/validation blocks."""
    if train_dataset is None:
        train_dataset = datasets.Dataset.from_dict({"text": list(train_docs)})
    if val_dataset is None and val_docs:
        val_dataset = datasets.Dataset.from_dict({"text": list(val_docs)})
    train, _ = tokenize_and_pack(train_dataset, tokenizer, block_size, train=True, num_proc=num_proc)
    validation, characters = (None, None)
    if val_dataset is not None:
        validation, characters = tokenize_and_pack(val_dataset, tokenizer, block_size, train=False)
    return LMData(train, validation, characters, list(train_docs) if train_docs is not None else None)


def check_block_size(block_size: int, max_position_embeddings: int) -> None:
    if block_size < 2:
        raise InputValueError(f"block_size must be at least 2 tokens, got {block_size}")
    if block_size > max_position_embeddings:
        raise InputValueError(
            f"block_size={block_size} is longer than the model's context (max_position_embeddings="
            f"{max_position_embeddings}); lower block_size or raise max_position_embeddings"
        )


def lm_dataloaders(data: LMData, batch_size: int, eval_batch_size: int | None = None, seed: int = 42):
    """DataLoaders over packed blocks: shuffled train batches (full batches only), in-order eval batches."""
    shuffle = isinstance(data.train, datasets.Dataset)
    train = DataLoader(data.train, batch_size=batch_size, shuffle=shuffle, drop_last=True,
                       generator=torch.Generator().manual_seed(seed) if shuffle else None)
    val = None
    if data.validation is not None:
        val = DataLoader(data.validation, batch_size=eval_batch_size or batch_size, shuffle=False)
    return train, val


__all__ = [
    "LMData", "split_document", "load_text_documents", "load_hub_documents", "tokenize_and_pack",
    "build_lm_data", "check_block_size", "lm_dataloaders",
]
