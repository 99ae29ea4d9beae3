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
