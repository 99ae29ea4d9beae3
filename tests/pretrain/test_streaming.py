"""A streamed corpus: each process reads its own part, tokenization runs in DataLoader workers, and a resumed run
replays the stream deterministically to where it stopped."""

import datasets
import pytest
import torch
from accelerate.data_loader import skip_first_batches

from hf_gptlite.pretrain.data import StreamedBlocks, lm_dataloaders

ROWS = [f"documento {i}: " + "palavra " * (3 + i % 11) for i in range(120)]


def stream(num_shards=4, seed=0):
    ds = datasets.Dataset.from_dict({"text": ROWS}).to_iterable_dataset(num_shards=num_shards)
    return ds.shuffle(seed=seed, buffer_size=16)


def documents_seen(tokenizer, blocks_dataset):
    return {tokenizer.decode(ids).split(":")[0] for ids in blocks_dataset._documents()}


@pytest.mark.parametrize("num_shards", [4, 3])  # shards split evenly; or every 2nd row
def test_each_process_reads_its_own_part_of_the_stream(corpus, num_shards):
    tok = corpus["tokenizer"]
    parts = [documents_seen(tok, StreamedBlocks(stream(num_shards), tok, 16, rank, 2)) for rank in (0, 1)]
    assert not parts[0] & parts[1] and parts[0] | parts[1] == {f"documento {i}" for i in range(120)}


def test_a_process_reads_the_same_shards_every_epoch(corpus):
    """Reshuffled within its part each epoch, never dealt other shards: with shards of uneven length two processes
    reach an epoch's end at different steps, and one must not then read the shards the other is still reading.
    (``split_dataset_by_node`` alone deals the shards out anew each epoch, in datasets 4 and 5.)"""
    tok = corpus["tokenizer"]

    def part(rank, epoch):
        blocks = StreamedBlocks(stream(num_shards=4), tok, 16, rank, 2)
        blocks.set_epoch(epoch)
        return documents_seen(tok, blocks), [b["input_ids"] for b in blocks]

    first_epoch = {}
    for rank in (0, 1):
        epochs = [part(rank, epoch) for epoch in range(4)]
        assert all(docs == epochs[0][0] for docs, _ in epochs)
        assert not all(torch.equal(a, b) for a, b in zip(epochs[0][1], epochs[1][1], strict=False))  # reshuffled
        first_epoch[rank] = epochs[0][0]
    assert not first_epoch[0] & first_epoch[1]


def test_blocks_pack_the_documents_like_the_cache(corpus):
    tok = corpus["tokenizer"]
    blocks = StreamedBlocks(stream(), tok, 16, rows_per_batch=7)
    ids = [t for doc in blocks._documents() for t in (*doc, tok.eos_token_id)]
    packed = torch.cat([b["input_ids"] for b in blocks]).tolist()
    assert packed == ids[: len(ids) // 16 * 16]


def test_workers_tokenize_and_a_resumed_epoch_replays_the_stream(corpus):
    from hf_gptlite.pretrain.data import LMData

    data = LMData(StreamedBlocks(stream(num_shards=2), corpus["tokenizer"], 16), None, None)
    loader, _ = lm_dataloaders(data, batch_size=4, num_workers=2)
    epochs = {}
    for epoch in (1, 1, 2):
        loader.dataset.set_epoch(epoch)
        epochs.setdefault(epoch, []).append([b["input_ids"] for b in loader])
    full = epochs[1][0]
    assert len(full) > 6 and all(torch.equal(a, b) for a, b in zip(full, epochs[1][1], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(full, epochs[2][0], strict=False))  # reshuffled per epoch
    loader.dataset.set_epoch(1)
    resumed = [b["input_ids"] for b in skip_first_batches(loader, 5)]
    assert len(resumed) == len(full) - 5 and all(torch.equal(a, b) for a, b in zip(full[5:], resumed, strict=True))


def test_a_streamed_folder_holds_out_its_first_rows_from_every_part(tmp_path):
    """Without a validation split the first rows are held out, and no part of the stream (a process's, a worker's)
    trains on them or loses other rows (datasets' skip(n) would skip n/k rows of each of k parts)."""
    import json

    from datasets.distributed import split_dataset_by_node

    from hf_gptlite.pretrain.data import load_hub_documents

    rows = [f"linha {i}" for i in range(40)]
    for shard in range(4):
        with open(tmp_path / f"train-{shard:05d}-of-00004.jsonl", "w") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in rows[shard * 10 : (shard + 1) * 10])
    train, val = load_hub_documents(str(tmp_path), streaming=True, validation_documents=6)
    assert list(val["text"]) == rows[:6]
    for world in (2, 3):  # shards split evenly; every 3rd row
        parts = [[r["text"] for r in split_dataset_by_node(train, rank=rank, world_size=world)] for rank in range(world)]
        assert sorted(t for part in parts for t in part) == sorted(rows[6:])


# ---- the real thing: `accelerate launch` with 2 processes on a local streamed dataset -----------------------
def _launch(out, folder, tokenizer_dir, blocks, *extra, kill_at=0, max_steps=8, save_steps=5):
    import subprocess
    import sys
    from pathlib import Path

    from conftest import TINY_FLAGS, recipe_env

    blocks.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
           "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(Path(__file__).with_name("stream_worker.py")),
           "--output_dir", str(out), "--dataset_name", str(folder), "--streaming", "true",
           "--tokenizer_name_or_path", tokenizer_dir, "--dataloader_num_workers", "2", "--max_steps", str(max_steps),
           "--save_steps", str(save_steps), "--eval_steps", "0", "--seed", "3", *TINY_FLAGS, *extra]
    env = dict(recipe_env(), ACCELERATE_USE_CPU="1", GPTLITE_TEST_BLOCKS=str(blocks),
               GPTLITE_TEST_KILL_AT_FORWARD=str(kill_at))
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _batches(blocks, rank):
    import json

    return [json.loads(line) for line in (blocks / f"blocks_rank{rank}.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_stream_their_own_parts_and_a_resumed_run_ends_with_the_same_weights(corpus, tmp_path):
    """A local streamed dataset (4 .jsonl shards of 32, 32, 32 and 96 documents + a validation file) under
    `accelerate launch --num_processes 2`, 2 DataLoader workers each. Every document is 15 tokens + [EOS] (a block of
    32 is 2 documents, a batch of 8 blocks 16 documents). The processes' parts differ in length (64 and 128
    documents: an epoch of 4 and of 8 batches), so they cross epoch ends at different steps. (a) In the 8 steps of the
    run each process trains on its own documents, each once per epoch of its own, none on both, together on every
    training document. (b) The run resumed from its step-5 checkpoint (in a copy of its folder, as a run stopped
    there; one process is then in its second epoch, the other in its first) trains steps 6-8 on the same batches and
    ends with the same weights, bit for bit: the checkpoint holds every process's position. (A SIGKILLed run, with
    stream_worker.py's GPTLITE_TEST_KILL_AT_FORWARD, gave equal weights too when measured; left out for time.)"""
    import json
    import shutil

    from safetensors.torch import load_file

    from hf_gptlite.training import list_checkpoints

    tok = corpus["tokenizer"]
    folder = tmp_path / "stream"
    folder.mkdir()
    docs = [f"doc{i:04d}: ele disse que" for i in range(192 + 16)]
    assert {len(tok(d, add_special_tokens=False)["input_ids"]) for d in docs} == {15}
    bounds = [0, 32, 64, 96, 192]
    for shard in range(4):
        with open(folder / f"train-{shard:05d}-of-00004.jsonl", "w") as f:
            f.writelines(json.dumps({"text": d}) + "\n" for d in docs[bounds[shard] : bounds[shard + 1]])
    with open(folder / "validation.jsonl", "w") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in docs[192:])

    run = _launch(tmp_path / "run", folder, corpus["tokenizer_dir"], tmp_path / "blocks")
    assert run.returncode == 0, run.stderr[-4000:]

    def documents(batches):  # each block: 2 whole documents
        return [tok.decode(block[j : j + 15]) for batch in batches for block in batch for j in (0, 16)]

    seen = {}
    for rank in (0, 1):
        batches = _batches(tmp_path / "blocks", rank)
        assert len(batches) == 8 and all(len(b) == 8 for b in batches)
        seen[rank] = documents(batches)
        part = len(set(seen[rank]))
        assert len(set(seen[rank][:part])) == part  # its first epoch: each of its documents once
    assert sorted(len(set(seen[rank])) for rank in (0, 1)) == [64, 128]
    assert not set(seen[0]) & set(seen[1]) and set(seen[0]) | set(seen[1]) == set(docs[:192])

    stopped = tmp_path / "stopped"
    shutil.copytree(tmp_path / "run", stopped, ignore=shutil.ignore_patterns("step_8"))
    for name in ("model.safetensors", "metrics.json"):
        (stopped / name).unlink()
    assert [p.name for p in list_checkpoints(stopped)] == ["step_5"]
    resumed = _launch(stopped, folder, corpus["tokenizer_dir"], tmp_path / "blocks_resumed",
                      "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    for rank in (0, 1):
        assert _batches(tmp_path / "blocks_resumed", rank) == _batches(tmp_path / "blocks", rank)[5:]
    a, b = load_file(tmp_path / "run" / "model.safetensors"), load_file(stopped / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
