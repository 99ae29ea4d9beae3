"""A tiny instruction fine-tune end to end: recipe -> model folder with chat template -> evaluate recipe,
LoRA merged into the saved model, and the folder working with transformers' pipeline on chat messages."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import PRECISION_FLAGS, precision_overrides
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM
from hf_gptlite.instruct import FinetuneInstructConfig, run_finetune_instruct
from hf_gptlite.instruct.data import format_input, load_alpaca_records
from hf_gptlite.tokenization import align_config_with_tokenizer, train_bpe_tokenizer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A small "pretrained" GPTLite + its own BPE tokenizer, saved like the main job saves its model."""
    records = load_alpaca_records()
    tokenizer = train_bpe_tokenizer([format_input(r) + " " + r["output"] for r in records[:300]], vocab_size=600,
                                    show_progress=False)
    config = align_config_with_tokenizer(GPTLiteConfig.from_preset("tiny", max_position_embeddings=256,
                                                                   hidden_dropout_prob=0.0), tokenizer)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("base")
    GPTLiteForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run_recipe(script, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "recipes" / script), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_finetune_then_evaluate_recipes(base_model, tmp_path):
    out = tmp_path / "instruct"
    run_recipe("finetune_instruct.py", "--config", REPO / "recipes/configs/finetune_instruct.yaml",
               "--model_name_or_path", base_model, "--output_dir", out, "--max_steps", 6,
               "--max_train_records", 24, "--per_device_batch_size", 4, "--mask_prompt", "true",
               "--max_length", 128, "--seed", 1, "--eval_steps", 3, "--report_to", "none", *PRECISION_FLAGS)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja", "metrics.json",
                 "training_config.json", "loss_curve.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 6 and 0 < metrics["eval_loss"] < 20
    run_config = json.loads((out / "training_config.json").read_text())
    assert run_config["mask_prompt"] is True and run_config["max_length"] == 128 and run_config["seed"] == 1
    # the weights moved
    before, after = load_file(base_model / "model.safetensors"), load_file(out / "model.safetensors")
    assert not torch.equal(before["transformer.h.0.attn.c_attn.weight"], after["transformer.h.0.attn.c_attn.weight"])
    # the saved tokenizer renders the Alpaca layout
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Name a color."}], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt.endswith("### Instruction:\nName a color.\n\n### Response:\n")

    run_recipe("evaluate_instruct.py", "--model_name_or_path", out, "--max_records", 3, "--max_new_tokens", 8,
               "--batch_size", 2)
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["rouge_l"] <= 1.0 and metrics["num_evaluated"] == 3 and "eval_loss" in metrics
    rows = [json.loads(line) for line in (out / "test_responses.jsonl").read_text().splitlines()]
    test_records = load_alpaca_records()[935:938]
    assert [r["instruction"] for r in rows] == [r["instruction"] for r in test_records]
    assert all(isinstance(r["model_response"], str) for r in rows)


@pytest.mark.slow
def test_lora_is_merged_and_the_folder_works_with_pipeline(base_model, tmp_path):
    out = tmp_path / "lora"
    cfg = FinetuneInstructConfig(model_name_or_path=str(base_model), output_dir=str(out), lora=True, lora_r=4,
                                 max_steps=3, max_train_records=12, per_device_batch_size=4, max_length=96,
                                 learning_rate=1e-2, eval_steps=0, report_to="none", **precision_overrides())
    run_finetune_instruct(cfg)
    assert not (out / "adapter_config.json").exists() and (out / "lora_adapter" / "adapter_config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(model, GPTLiteForCausalLM) and not any("lora" in n for n, _ in model.named_parameters())
    base = load_file(base_model / "model.safetensors")
    merged = model.state_dict()
    assert not torch.equal(base["transformer.h.0.attn.c_attn.weight"], merged["transformer.h.0.attn.c_attn.weight"])
    assert torch.equal(base["transformer.wte.weight"], merged["transformer.wte.weight"])  # not a LoRA target

    generator = pipeline("text-generation", model=str(out))
    result = generator([{"role": "user", "content": "Name a color."}], max_new_tokens=5, do_sample=False)
    conversation = result[0]["generated_text"]
    assert conversation[0] == {"role": "user", "content": "Name a color."}
    assert conversation[-1]["role"] == "assistant" and isinstance(conversation[-1]["content"], str)
