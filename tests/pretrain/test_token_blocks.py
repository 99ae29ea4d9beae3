"""Blocks read by index from the token cache: the blocks of whole-document packing, each block once per epoch
across processes, and a run that reuses the cache tokenizes nothing."""

import numpy as np
import pytest
import torch
from conftest import tiny_pretrain_cfg

import hf_gptlite.data.token_cache as tc
from hf_gptlite.data.text import clean_book_text, default_corpus_files, read_text_files
from hf_gptlite.pretrain import run_pretraining
from hf_gptlite.pretrain.data import (
    LMData,
    TrainBlocks,
    lm_data_from_corpus,
    lm_dataloaders,
    load_corpus,
    split_document,
)


def packed_the_old_way(tokenizer, docs, block_size):
    """What hf_gptlite packed before the cache: each document encoded whole, doc [EOS] doc [EOS] ... cut in blocks;
    validation [EOS] doc [EOS] ... in blocks overlapping by one token, padded."""
    eos = tokenizer.eos_token_id
    stream = [t for d in docs["train"] for t in (*tokenizer(d, add_special_tokens=False)["input_ids"], eos)]
    train = [stream[i : i + block_size] for i in range(0, len(stream) // block_size * block_size, block_size)]
    stream = [eos] + [t for d in docs["val"] for t in (*tokenizer(d, add_special_tokens=False)["input_ids"], eos)]
    inputs, labels = [], []
    for start in range(0, len(stream) - 1, block_size - 1):
        block = stream[start : start + block_size]
        target = [-100 if (j == 0 and start > 0) else t for j, t in enumerate(block)]
        pad = block_size - len(block)
        inputs.append(block + [tokenizer.pad_token_id] * pad)
        labels.append(target + [-100] * pad)
    return train, inputs, labels


def test_the_main_jobs_data_is_token_identical_to_whole_document_packing(corpus, tmp_path):
    """The embedded novels (the main job's corpus), through the cache: the blocks and the character count of
    encoding each cleaned novel whole, as hf_gptlite did before."""
    tok = corpus["tokenizer"]
    texts = [clean_book_text(t) for t in read_text_files(default_corpus_files())]
    halves = [split_document(t, 0.05) for t in texts]
    docs = {"train": [h for h, _ in halves], "val": [t for _, t in halves]}
    data = lm_data_from_corpus(load_corpus(), tok, 64, tmp_path / "cache")
    train, val_inputs, val_labels = packed_the_old_way(tok, docs, 64)
    assert data.train[:]["input_ids"].tolist() == train
    assert data.validation[:]["input_ids"].tolist() == val_inputs
    assert data.validation[:]["labels"].tolist() == val_labels
    assert data.eval_num_characters == sum(len(v) + 1 for v in docs["val"])


def test_two_processes_see_every_block_once_per_epoch():
    """accelerate's sharding of the training loader (as the loop prepares it) on 2 processes: disjoint halves that
    cover every block each epoch, a new order each epoch, the same on both processes' seeds."""
    from accelerate.data_loader import prepare_data_loader

    block_size, n_blocks = 8, 96  # 96 blocks = 12 batches of 4 per process x 2 processes
    data = LMData(TrainBlocks(np.arange(n_blocks * block_size, dtype=np.uint32), block_size), None, None)
    orders = {}
    for rank in (0, 1):
        loader, _ = lm_dataloaders(data, batch_size=4, seed=3)
        torch.manual_seed(3)
        shard = prepare_data_loader(loader, torch.device("cpu"), num_processes=2, process_index=rank,
                                    put_on_device=False, use_seedable_sampler=True)
        for epoch in (0, 1):
            shard.set_epoch(epoch)
            orders[rank, epoch] = [int(b[0]) // block_size for batch in shard for b in batch["input_ids"]]
    for epoch in (0, 1):
        a, b = orders[0, epoch], orders[1, epoch]
        assert not set(a) & set(b) and sorted(a + b) == list(range(n_blocks)), epoch
    assert orders[0, 0] != orders[0, 1]


def test_a_second_run_and_a_resumed_run_tokenize_nothing(corpus, tmp_path, monkeypatch, capsys):
    calls = []
    real = tc.encode_documents
    monkeypatch.setattr(tc, "encode_documents", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache = str(tmp_path / "cache")
    run_pretraining(tiny_pretrain_cfg(corpus, tmp_path / "a", max_steps=4, save_steps=2, token_cache_dir=cache))
    assert len(calls) == 2 and "token cache: " in capsys.readouterr().out
    run_pretraining(tiny_pretrain_cfg(corpus, tmp_path / "b", max_steps=2, token_cache_dir=cache))
    run_pretraining(tiny_pretrain_cfg(corpus, tmp_path / "a", max_steps=6, save_steps=2, token_cache_dir=cache,
                                      resume_from_checkpoint="latest"))
    assert len(calls) == 2 and capsys.readouterr().out.count("token cache: reusing") == 2


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_table_files_pretrain_through_the_cache(corpus, tmp_path, suffix):
    import datasets

    rows = datasets.Dataset.from_dict({"body": [t for path in corpus["files"] for t in open(path).read().split("\n\n")]})
    path = tmp_path / f"rows{suffix}"
    rows.to_json(path) if suffix == ".jsonl" else rows.to_parquet(path)
    metrics = run_pretraining(tiny_pretrain_cfg(corpus, tmp_path / "run", train_files=[str(path)], text_column="body",
                                                max_steps=2, token_cache_dir=str(tmp_path / "cache"), clean_text=None))
    assert metrics["global_step"] == 2 and metrics["eval_bits_per_char"] > 0
