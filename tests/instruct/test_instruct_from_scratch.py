"""FinetuneInstructConfig(from_scratch=True): the no-pretraining ablation keeps the architecture and tokenizer of
the source folder but none of its weights (bench/instruct.py's random-init arm)."""

import pytest
import torch
from safetensors.torch import load_file

from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM
from hf_gptlite.instruct import FinetuneInstructConfig, run_finetune_instruct
from hf_gptlite.instruct.data import format_input, load_alpaca_records
from hf_gptlite.tokenization import align_config_with_tokenizer, train_bpe_tokenizer


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    records = load_alpaca_records()
    tokenizer = train_bpe_tokenizer([format_input(r) + " " + r["output"] for r in records[:200]], vocab_size=400,
                                    show_progress=False)
    config = align_config_with_tokenizer(GPTLiteConfig.from_preset("tiny", hidden_dropout_prob=0.0), tokenizer)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("base")
    GPTLiteForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("from_scratch", [False, True])
def test_from_scratch_replaces_the_weights_not_the_shape(base, tmp_path, from_scratch):
    out = tmp_path / "run"
    cfg = FinetuneInstructConfig(model_name_or_path=str(base), output_dir=str(out), max_steps=1, learning_rate=0.0,
                                 warmup_steps=0, max_train_records=8, per_device_batch_size=4, max_length=64,
                                 eval_steps=0, report_to="none", from_scratch=from_scratch)
    run_finetune_instruct(cfg)
    source, tuned = load_file(base / "model.safetensors"), load_file(out / "model.safetensors")
    assert source.keys() == tuned.keys() and all(source[k].shape == tuned[k].shape for k in source)
    same = all(torch.equal(source[k], tuned[k]) for k in source)  # lr 0: only the start point differs
    assert same is not from_scratch
