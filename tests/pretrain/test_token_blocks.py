"""Blocks read by index from the token cache: the blocks of whole-document packing, each block once per epoch
across processes, and a run that reuses the cache tokenizes nothing."""

import numpy as np
import pytest
import torch
from conftest import tiny_pretrain_cfg

import hf_gptlite.data.corpus as corpus_module
import hf_gptlite.data.text as text_module
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


def test_the_main_jobs_data_is_token_identical_to_whole_document_packing(corpus, tmp_path, monkeypatch):
    """The embedded novels (the main job's corpus), through the cache: the blocks and the character count of
    encoding each cleaned novel whole, as hf_gptlite did before; and the same again when the novels are cleaned in
    ~2 KB spans (thousands of cuts) instead of 8 MB ones (each novel whole)."""
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
    monkeypatch.setattr(text_module, "CLEAN_CHUNK_BYTES", 2048)
    corpus_module._clean_plan.cache_clear()
    spans = lm_data_from_corpus(load_corpus(), tok, 64, tmp_path / "cache_spans")
    corpus_module._clean_plan.cache_clear()
    assert np.array_equal(spans.train.tokens, data.train.tokens)
    assert np.array_equal(spans.validation.tokens, data.validation.tokens)
    assert spans.eval_num_characters == data.eval_num_characters


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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_machines_train_like_two_processes_on_one(corpus, tmp_path):
    """Two `accelerate launch --num_machines 2 --machine_rank 0|1` launchers on this host (one process each, gloo),
    each "machine" with its own token cache, end with the weights of one launcher running 2 processes."""
    import subprocess
    import sys

    from conftest import REPO, TINY_FLAGS, recipe_env
    from safetensors.torch import load_file

    def command(out, cache, *launch):
        return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", *launch,
                "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "recipes" / "pretrain.py"),
                "--output_dir", str(out), "--train_files", *corpus["files"], "--clean_text", "true",
                "--tokenizer_name_or_path", corpus["tokenizer_dir"], "--token_cache_dir", str(cache),
                "--max_steps", "6", "--save_steps", "3", "--eval_steps", "0", "--seed", "3", *TINY_FLAGS]

    env = dict(recipe_env(), ACCELERATE_USE_CPU="1")
    port = _free_port()
    machines = [subprocess.Popen(command(tmp_path / "two_machines", tmp_path / f"cache{rank}", "--num_machines", "2",
                                         "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                                         "--main_process_port", str(port)),
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for rank in (0, 1)]
    logs = [m.communicate(timeout=600)[0] for m in machines]
    assert [m.returncode for m in machines] == [0, 0], "\n".join(log[-3000:] for log in logs)
    one = subprocess.run(command(tmp_path / "one_machine", tmp_path / "cache_one", "--num_machines", "1"), env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    for rank in (0, 1):  # each machine built its own cache: the same tokens
        (built,) = (tmp_path / f"cache{rank}").iterdir()
        assert (built / "train.bin").read_bytes() == next((tmp_path / "cache_one").iterdir()).joinpath(
            "train.bin").read_bytes()
    a, b = load_file(tmp_path / "two_machines" / "model.safetensors"), load_file(tmp_path / "one_machine" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    metrics = __import__("json").loads((tmp_path / "two_machines" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["train_tokens"] == 6 * 2 * 8 * 32
