"""End-to-end spam fine-tune on a tiny model: metrics.json, confusion matrix, pipeline / remote code / CLI load."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import precision_overrides, run_without_hf_gptlite

from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM
from hf_gptlite.spam import SpamConfig, run_spam_finetune
from hf_gptlite.spam.data import load_labelled_texts, read_splits
from hf_gptlite.tokenization import train_bpe_tokenizer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory):
    """A tiny (untrained) GPTLite causal LM + a BPE tokenizer trained on the SMS texts, saved like a pretraining run."""
    out = tmp_path_factory.mktemp("tiny_lm")
    tokenizer = train_bpe_tokenizer(list(load_labelled_texts()["text"]), vocab_size=512, show_progress=False)
    torch.manual_seed(0)
    model = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny", vocab_size=len(tokenizer)))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def finetune(lm_dir, out_dir, split_dir, **overrides):
    cfg = SpamConfig(model_name_or_path=str(lm_dir), output_dir=str(out_dir), split_dir=str(split_dir),
                     per_device_batch_size=16, logging_steps=5, **{**precision_overrides(), **overrides})
    return run_spam_finetune(cfg)


@pytest.fixture(scope="module")
def spam_run(tiny_lm_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("spam_run")
    metrics = finetune(tiny_lm_dir, root / "run", root / "split", trainable="all", learning_rate=2e-3,
                       num_epochs=1.0)
    return root / "run", root / "split", metrics


def test_finetune_writes_metrics_and_plots(spam_run):
    run, split, returned = spam_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(returned))
    for key in ("test_accuracy", "test_precision", "test_recall", "test_f1", "eval_accuracy", "eval_f1", "eval_loss"):
        assert 0.0 <= metrics[key] <= (1.0 if key != "eval_loss" else 10.0), (key, metrics[key])
    assert metrics["test_num_examples"] == 299 and sum(map(sum, metrics["test_confusion_matrix"])) == 299
    # one epoch of 1045 messages in batches of 16, validated at the end of it
    assert metrics["global_step"] == 66
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any("eval_accuracy" in r for r in logged)
    for name in ("confusion_matrix.png", "loss_curve.png", "training_config.json", "model.safetensors",
                 "tokenizer.json", "config.json"):
        assert (run / name).stat().st_size > 0, name
    config = json.loads((run / "config.json").read_text())
    assert config["id2label"] == {"0": "ham", "1": "spam"} and config["architectures"] == ["GPTLiteForSequenceClassification"]
    # one epoch from random init already separates the balanced classes well (chance is 50%; seen: 95.7%)
    assert metrics["test_accuracy"] > 0.8, metrics["test_accuracy"]


def test_pipeline_loads_the_run_and_agrees_with_metrics(spam_run):
    from transformers import pipeline

    run, split, _ = spam_run
    metrics = json.loads((run / "metrics.json").read_text())
    test = read_splits(split)["test"]
    clf = pipeline("text-classification", model=str(run))
    preds = clf(list(test["text"]), batch_size=32, truncation=True)
    assert {p["label"] for p in preds} <= {"ham", "spam"} and all(0.5 <= p["score"] <= 1.0 for p in preds)
    correct = sum(p["label"] == ["ham", "spam"][y] for p, y in zip(preds, test["label"]))
    # padding differs between the pipeline's and the recipe's batches: allow one borderline message to flip
    assert abs(correct - round(metrics["test_accuracy"] * test.num_rows)) <= 1




def test_remote_code_pipeline_without_the_package(spam_run, tmp_path):
    run, _, _ = spam_run
    script = textwrap.dedent(
        f"""
        from transformers import pipeline
        clf = pipeline("text-classification", model={str(run)!r}, trust_remote_code=True)
        assert "hf_gptlite" not in sys.modules
        print("MODULE", type(clf.model).__module__)
        print("PRED", clf("WINNER!! claim your free prize now")[0]["label"])
        """
    )
    proc = run_without_hf_gptlite(script, tmp_path)
    assert "MODULE transformers_modules" in proc.stdout
    assert any(line in ("PRED ham", "PRED spam") for line in proc.stdout.splitlines()), proc.stdout


def test_classify_command_args_and_stdin(spam_run, capsys):
    from hf_gptlite.spam.predict import main

    run, _, _ = spam_run
    texts = ["Ok lar... Joking wif u oni...", "FREE entry in 2 a wkly comp"]
    assert main(["--model", str(run), *texts]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line, text in zip(lines, texts):
        label, score, echoed = line.split("\t")
        assert label in ("ham", "spam") and 0.5 <= float(score) <= 1.0 and echoed == text
    # the module as a command, reading stdin (blank lines skipped)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    by_stdin = subprocess.run([sys.executable, "-m", "hf_gptlite.spam.predict", "--model", str(run)],
                              input=texts[0] + "\n\n", env=env, capture_output=True, text=True, timeout=300)
    assert by_stdin.returncode == 0, by_stdin.stderr[-2000:]
    assert by_stdin.stdout.splitlines() == lines[:1]
    assert main(["--model", str(run / "nope"), "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model folder") and "nope' does not exist" in err and "finetune_spam.py" in err
    assert err.count("\n") == 1  # one line


def test_lora_run_saves_a_merged_classifier(tiny_lm_dir, spam_run, tmp_path):
    from transformers import pipeline

    _, split, _ = spam_run
    metrics = finetune(tiny_lm_dir, tmp_path / "lora", split, trainable="lora", max_steps=4)
    assert metrics["trainable"] == "lora" and metrics["trainable_parameters"] < 20_000
    assert not (tmp_path / "lora" / "adapter_config.json").exists()
    assert pipeline("text-classification", model=str(tmp_path / "lora"))("hi")[0]["label"] in ("ham", "spam")


def test_mean_pooling_and_layer_lr_decay_run_and_are_saved(tiny_lm_dir, spam_run, tmp_path):
    from transformers import AutoModelForSequenceClassification, pipeline

    _, split, _ = spam_run
    out = tmp_path / "mean"
    metrics = finetune(tiny_lm_dir, out, split, pooling="mean", layer_lr_decay=0.5, max_steps=4)
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert json.loads((out / "config.json").read_text())["classifier_pooling"] == "mean"
    assert json.loads((out / "training_config.json").read_text())["layer_lr_decay"] == 0.5
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.classifier_pooling == "mean"
    assert pipeline("text-classification", model=str(out))("hi")[0]["label"] in ("ham", "spam")
    with pytest.raises(ValueError, match="pooling must be 'last' or 'mean'"):
        SpamConfig(pooling="max")


@pytest.mark.parametrize("mode, expected", [("head", {"score.weight"}),
                                            ("last_block", {"score.weight", "transformer.ln_f.weight"})])
def test_trainable_modes(tiny_lm_dir, mode, expected):
    from hf_gptlite.spam.model import load_classifier_from_lm, set_trainable

    model, _ = load_classifier_from_lm(tiny_lm_dir)
    lm_state = GPTLiteForCausalLM.from_pretrained(tiny_lm_dir).state_dict()
    assert torch.equal(model.transformer.h[0].attn.c_attn.weight, lm_state["transformer.h.0.attn.c_attn.weight"])
    trainable = {n for n, p in set_trainable(model, mode).named_parameters() if p.requires_grad}
    assert expected <= trainable
    last = model.config.num_hidden_layers - 1
    assert any(n.startswith(f"transformer.h.{last}.") for n in trainable) == (mode == "last_block")
    assert not any(n.startswith(("transformer.h.0.", "transformer.wte")) for n in trainable)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="trainable must be one of"):
        SpamConfig(trainable="everything")
