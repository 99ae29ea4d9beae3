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


# ---- the real thing: `accelerate launch` with 2 processes on a local streamed dataset -----------------------
def _launch(out, folder, tokenizer_dir, blocks, *extra, kill_at=0):
    import subprocess
    import sys
    from pathlib import Path

    from conftest import TINY_FLAGS, recipe_env

    blocks.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
           "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(Path(__file__).with_name("stream_worker.py")),
           "--output_dir", str(out), "--dataset_name", str(folder), "--streaming", "true",
           "--tokenizer_name_or_path", tokenizer_dir, "--dataloader_num_workers", "2", "--max_steps", "6",
           "--save_steps", "3", "--eval_steps", "0", "--seed", "3", *TINY_FLAGS, *extra]
    env = dict(recipe_env(), ACCELERATE_USE_CPU="1", GPTLITE_TEST_BLOCKS=str(blocks),
               GPTLITE_TEST_KILL_AT_FORWARD=str(kill_at))
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _batches(blocks, rank):
    import json

    return [json.loads(line) for line in (blocks / f"blocks_rank{rank}.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_stream_their_own_parts_and_a_killed_run_resumes_to_the_same_weights(corpus, tmp_path):
    """A local streamed dataset (4 .jsonl shards + a validation file) under `accelerate launch --num_processes 2`,
    2 DataLoader workers each. Every document is 15 tokens + [EOS] (a block of 32 is 2 documents) and a shard 32
    documents, so an epoch is 4 batches of 8 blocks per process (2 from each worker): (a) in its first 4 steps each process trains on its own documents, together
    every training document exactly once, none on both, then a new order; (b) a run SIGKILLed in step 5 (after the
    checkpoint of step 3) and resumed ends with the weights of the uninterrupted run, bit for bit."""
    import json

    from safetensors.torch import load_file

    tok = corpus["tokenizer"]
    folder = tmp_path / "stream"
    folder.mkdir()
    docs = [f"doc{i:04d}: ele disse que" for i in range(4 * 32 + 16)]
    assert {len(tok(d, add_special_tokens=False)["input_ids"]) for d in docs} == {15}
    for shard in range(4):
        with open(folder / f"train-{shard:05d}-of-00004.jsonl", "w") as f:
            f.writelines(json.dumps({"text": d}) + "\n" for d in docs[shard * 32 : (shard + 1) * 32])
    with open(folder / "validation.jsonl", "w") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in docs[128:])

    straight = _launch(tmp_path / "straight", folder, corpus["tokenizer_dir"], tmp_path / "blocks_straight")
    assert straight.returncode == 0, straight.stderr[-4000:]

    def documents(batches):  # each block: 2 whole documents
        return [tok.decode(block[j : j + 15]) for batch in batches for block in batch for j in (0, 16)]

    seen = {}
    for rank in (0, 1):
        batches = _batches(tmp_path / "blocks_straight", rank)
        assert len(batches) == 6 and all(len(b) == 8 for b in batches)
        seen[rank] = documents(batches[:4])
        assert len(set(seen[rank])) == 4 * 8 * 2  # no document twice in an epoch
        assert set(documents(batches[4:])) <= set(seen[rank]) and documents(batches[4:]) != seen[rank][:32]
    assert not set(seen[0]) & set(seen[1]) and set(seen[0]) | set(seen[1]) == set(docs[:128])

    killed = _launch(tmp_path / "killed", folder, corpus["tokenizer_dir"], tmp_path / "blocks_killed", kill_at=5)
    assert killed.returncode != 0 and (tmp_path / "killed" / "checkpoints" / "step_3").is_dir()
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    resumed = _launch(tmp_path / "killed", folder, corpus["tokenizer_dir"], tmp_path / "blocks_resumed",
                      "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    for rank in (0, 1):  # the resumed run trained steps 4-6 on the batches the uninterrupted one did
        assert _batches(tmp_path / "blocks_resumed", rank) == _batches(tmp_path / "blocks_straight", rank)[3:]
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "killed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
