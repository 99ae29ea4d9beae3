"""Pretraining: documents held out for validation, packing, streamed data, bad input, and the main job end to end."""

import json
import math

import pytest
from conftest import TINY_FLAGS, tiny_pretrain_cfg
from transformers import AutoModelForCausalLM

import hf_gptlite  # noqa: F401  (Auto classes)
from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM
from hf_gptlite.pretrain import run_pretraining
from hf_gptlite.pretrain.data import (
    StreamedBlocks,
    build_lm_data,
    check_block_size,
    lm_dataloaders,
    load_text_documents,
    split_document,
)
from hf_gptlite.pretrain.metrics import lm_metrics
from hf_gptlite.training import Trainer, TrainingConfig


def test_validation_is_held_out_by_document_and_scores_every_token(corpus):
    text = "primeira linha\nsegunda linha\nterceira linha\nquarta linha\n"
    head, tail = split_document(text, 0.25)
    assert head + "\n" + tail == text.strip("\n") and tail == "quarta linha"
    train_docs, val_docs = load_text_documents(corpus["files"], clean=True, validation_fraction=0.1)
    assert len(train_docs) == len(val_docs) == 2
    for train_doc, val_doc in zip(train_docs, val_docs, strict=True):
        assert val_doc not in train_doc and 0.05 < len(val_doc) / (len(train_doc) + len(val_doc)) < 0.15
    tok = corpus["tokenizer"]
    data = build_lm_data(tok, 32, train_docs, val_docs)
    n_val_tokens = sum(len(tok(d, add_special_tokens=False)["input_ids"]) for d in val_docs)
    labels = data.validation[:]["labels"]  # (blocks, 32)
    assert int((labels[:, 1:] != -100).sum()) == n_val_tokens + len(val_docs)  # each token (+ [EOS]) once
    assert data.eval_num_characters == sum(map(len, val_docs)) + len(val_docs)
    train = data.train[:]
    assert train["input_ids"].shape[1] == 32 and bool((train["input_ids"] == train["labels"]).all())


def test_streamed_documents_train_through_the_same_loop(corpus, tmp_path):
    import datasets

    train_docs, val_docs = load_text_documents(corpus["files"], clean=True)
    stream = datasets.Dataset.from_dict({"text": train_docs}).to_iterable_dataset()
    data = build_lm_data(corpus["tokenizer"], 32, train_dataset=stream, val_docs=val_docs)
    assert isinstance(data.train, StreamedBlocks) and data.eval_num_characters > 0
    train_loader, eval_loader = lm_dataloaders(data, batch_size=4)
    model = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny", vocab_size=len(corpus["tokenizer"])))
    with pytest.raises(ValueError, match="set max_steps"):
        Trainer(model, train_loader, eval_loader, corpus["tokenizer"],
                TrainingConfig(output_dir=str(tmp_path), report_to="none"))
    metrics = Trainer(model, train_loader, eval_loader, corpus["tokenizer"],
                      TrainingConfig(output_dir=str(tmp_path), max_steps=4, report_to="none"),
                      compute_metrics=lm_metrics(data.eval_num_characters)).train()
    assert metrics["global_step"] == 4 and metrics["train_tokens"] == 4 * 4 * 32
    assert metrics["eval_bits_per_char"] > 0 and metrics["eval_perplexity"] > 1
    # every validation token is scored once: items are label tokens, not examples
    assert metrics["eval_tokens"] == int((data.validation[:]["labels"][:, 1:] != -100).sum())


def test_missing_and_empty_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_text_documents([tmp_path / "nope.txt"])
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match="empty.*empty.txt"):
        load_text_documents([tmp_path / "empty.txt"])


def test_context_longer_than_the_model_is_refused(corpus, tmp_path):
    with pytest.raises(ValueError, match="block_size=256 .*max_position_embeddings=128"):
        run_pretraining(tiny_pretrain_cfg(corpus, tmp_path, block_size=256))
    with pytest.raises(ValueError, match="block_size"):
        check_block_size(2048, 1024)


def test_tiny_run_learns_and_writes_a_loadable_model(corpus, tmp_path, capsys):
    from hf_gptlite.cli import run_command

    out = tmp_path / "run"
    status = run_command("main", ["--output_dir", str(out), "--train_files", *corpus["files"], "--vocab_size", "300",
                                  "--max_steps", "60", "--learning_rate", "5e-3", "--warmup_steps", "5",
                                  "--eval_steps", "30", "--save_steps", "0", *TINY_FLAGS])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    evals = [r for r in log if "eval_loss" in r]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 60
    start, end = evals[0]["eval_loss"], evals[-1]["eval_loss"]
    assert start > math.log(300) - 0.3  # an untrained model is near uniform
    assert end < start - 1.5, (start, end)
    assert metrics["eval_loss"] == pytest.approx(end)
    assert 0 < metrics["eval_bits_per_char"] < start * 3  # measured on the whole validation set
    for name in ("loss_curve.png", "training_config.json", "model.safetensors", "tokenizer.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "training_config.json").read_text())["max_steps"] == 60
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "GPTLiteForCausalLM" and model.config.vocab_size == 300
    assert "sample from the saved model:\n  A casa" in capsys.readouterr().out
