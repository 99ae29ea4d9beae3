"""The optional LM-adaptation phase of the classification recipe (lm_adapt_steps / lm_adapt_epochs): it trains the
causal LM on the training split's texts only, and the classifier starts from the adapted weights."""

import json

import pytest
import torch
from safetensors.torch import load_file

from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM
from hf_gptlite.spam import SpamConfig, run_spam_finetune
from hf_gptlite.spam import adapt as adapt_module
from hf_gptlite.spam import run as run_module
from hf_gptlite.spam.data import read_splits
from hf_gptlite.tokenization import train_bpe_tokenizer

TEXTS = ["free prize call now", "see you at six", "win cash today txt", "ok lar joking", "are you home"] * 40
LABELS = ["spam", "ham", "spam", "ham", "ham"] * 40


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_adapt")
    data = root / "data.jsonl"
    # distinct texts, so "which texts were read" is unambiguous
    rows = [{"text": f"{t} {i}", "label": y} for i, (t, y) in enumerate(zip(TEXTS, LABELS))]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tokenizer = train_bpe_tokenizer([r["text"] for r in rows], vocab_size=300, show_progress=False)
    torch.manual_seed(0)
    lm_dir = root / "lm"
    GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny", vocab_size=len(tokenizer))).save_pretrained(lm_dir)
    tokenizer.save_pretrained(lm_dir)
    return root, data, lm_dir


def run(root, data, lm_dir, name, **overrides):
    cfg = SpamConfig(model_name_or_path=str(lm_dir), output_dir=str(root / name), split_dir=str(root / "split"),
                     dataset_name_or_path=str(data), balanced=False, max_steps=2, per_device_batch_size=8,
                     logging_steps=1, lm_adapt_batch_size=4, lm_adapt_block_size=16, **overrides)
    return run_spam_finetune(cfg)


def test_adaptation_reads_only_training_texts_and_the_classifier_starts_from_it(tiny, monkeypatch):
    root, data, lm_dir = tiny
    seen, loaded = {}, {}
    real_build, real_load = adapt_module.build_lm_data, run_module.load_classifier_from_lm

    def spy_build(tokenizer, block_size, train_docs=None, val_docs=None, *args, **kwargs):
        seen["train"], seen["val"] = list(train_docs), val_docs
        return real_build(tokenizer, block_size, train_docs, val_docs, *args, **kwargs)

    def spy_load(source, *args, **kwargs):
        model, tokenizer = real_load(source, *args, **kwargs)
        loaded["source"] = source
        loaded["weights"] = {k: v.clone() for k, v in model.transformer.state_dict().items()}
        return model, tokenizer

    monkeypatch.setattr(adapt_module, "build_lm_data", spy_build)
    monkeypatch.setattr(run_module, "load_classifier_from_lm", spy_load)
    metrics = run(root, data, lm_dir, "adapted", lm_adapt_steps=3)

    splits = read_splits(root / "split")
    assert seen["train"] == list(splits["train"]["text"]) and seen["val"] is None
    assert not set(seen["train"]) & (set(splits["validation"]["text"]) | set(splits["test"]["text"]))
    adapted_dir = root / "adapted" / adapt_module.ADAPT_DIR
    assert loaded["source"] == adapted_dir
    assert json.loads((adapted_dir / "metrics.json").read_text())["global_step"] == 3
    adapted = load_file(adapted_dir / "model.safetensors")
    original = load_file(lm_dir / "model.safetensors")
    for key, value in loaded["weights"].items():
        torch.testing.assert_close(value, adapted[f"transformer.{key}"], msg=key)
    # the adaptation changed the LM: the classifier did not start from the original weights
    assert any(not torch.equal(adapted[k], original[k]) for k in adapted if k.startswith("transformer.h."))
    assert metrics["global_step"] == 2 and 0.0 <= metrics["test_accuracy"] <= 1.0


def test_adaptation_is_off_by_request_and_validates(tiny, monkeypatch):
    root, data, lm_dir = tiny
    called = []
    monkeypatch.setattr(run_module, "adapt_language_model", lambda *a, **k: called.append(1))
    run(root, data, lm_dir, "plain", lm_adapt_steps=0, lm_adapt_epochs=0)
    assert not called and not (root / "plain" / adapt_module.ADAPT_DIR).exists()
    with pytest.raises(ValueError, match="lm_adapt"):
        SpamConfig(lm_adapt_epochs=-1)


def test_lm_adapt_epochs_counts_passes_over_the_blocks_whatever_the_accumulation(tiny, capsys):
    """lm_adapt_epochs=1 with accumulation 2: one pass over the packed blocks (it used to be epochs x accumulation x
    processes passes), and the printed epoch count says 1.0."""
    import math
    import re

    root, data, lm_dir = tiny
    run(root, data, lm_dir, "epochs", lm_adapt_epochs=1.0, gradient_accumulation_steps=2)
    printed = re.search(r"-> (\d+) blocks of 16 tokens; (\d+) steps .*\(([\d.]+) epochs\)", capsys.readouterr().out)
    n_blocks, steps, epochs = int(printed[1]), int(printed[2]), float(printed[3])
    batches = n_blocks // 4  # full batches of lm_adapt_batch_size 4
    assert steps == math.ceil(batches / 2) and epochs == pytest.approx(steps / (batches / 2), abs=0.051)
    metrics = json.loads((root / "epochs" / adapt_module.ADAPT_DIR / "metrics.json").read_text())
    assert metrics["global_step"] == steps
    # every batch once, plus at most the one micro-batch that completes the last step
    assert batches * 4 * 16 <= metrics["train_tokens"] <= (batches + 1) * 4 * 16


def test_adaptation_from_scratch_starts_from_random_weights(tiny, monkeypatch):
    root, data, lm_dir = tiny
    run(root, data, lm_dir, "scratch", lm_adapt_steps=1, from_scratch=True, learning_rate=0.0,
        lm_adapt_learning_rate=0.0)
    adapted = load_file(root / "scratch" / adapt_module.ADAPT_DIR / "model.safetensors")
    original = load_file(lm_dir / "model.safetensors")
    # re-initialised (not the source weights), and the classifier was built from that folder
    assert not torch.equal(adapted["transformer.h.0.attn.c_attn.weight"], original["transformer.h.0.attn.c_attn.weight"])
    config = json.loads((root / "scratch" / "config.json").read_text())
    assert config["architectures"] == ["GPTLiteForSequenceClassification"]
