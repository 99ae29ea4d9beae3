"""Pretraining a GPTLite from scratch, and the main job.

    text (config.py: PretrainConfig) -> tokenizer -> packed blocks (data.py) -> training.train, with the LM
    metric function (metrics.py) -> OUTPUT_DIR: model folder (safetensors, config, code, tokenizer),
    metrics.json, log.jsonl, loss_curve.png, checkpoints/

The main job (``gptlite-main``) is the same run followed by a sample from the saved folder.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from accelerate.utils import set_seed

from ..modeling_gptlite import GPTLiteForCausalLM
from ..tokenization import ensure_pad_token
from ..training import distributed_state, train
from .config import PretrainConfig, build_model_config
from .data import build_lm_data, check_block_size, lm_dataloaders, load_hub_documents, load_text_documents
from .metrics import lm_metrics

DEMO_PROMPT = "A casa ficava no alto da rua, e"


def load_or_train_tokenizer(cfg: PretrainConfig, texts):
    """``tokenizer_name_or_path`` when given; else a byte-level BPE trained on ``texts`` on the main process,
    saved to ``output_dir/tokenizer`` and loaded from there by the other processes."""
    from transformers import AutoTokenizer

    from ..tokenization import train_bpe_tokenizer

    if cfg.tokenizer_name_or_path:
        return ensure_pad_token(AutoTokenizer.from_pretrained(cfg.tokenizer_name_or_path))
    state = distributed_state()
    folder = Path(cfg.output_dir) / "tokenizer"
    with state.main_process_first():
        if cfg.resume_from_checkpoint and (folder / "tokenizer.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(folder)  # a resumed run keeps its tokenizer
        elif state.is_main_process:
            if not texts:
                raise ValueError("no training text to train a tokenizer on")
            print(f"training a {cfg.vocab_size}-token byte-level BPE tokenizer on the training text ...", flush=True)
            tokenizer = train_bpe_tokenizer(
                texts, vocab_size=cfg.vocab_size, min_frequency=cfg.tokenizer_min_frequency,
                show_progress=False,
            )
            tokenizer.save_pretrained(folder)
        else:
            tokenizer = AutoTokenizer.from_pretrained(folder)
    return tokenizer


def run_pretraining(cfg: PretrainConfig) -> dict:
    """The whole pretraining job; returns the final metrics (also written to ``output_dir/metrics.json``)."""
    state = distributed_state()
    set_seed(cfg.seed)
    block_size = cfg.block_size or build_model_config(cfg).max_position_embeddings
    check_block_size(block_size, build_model_config(cfg).max_position_embeddings)  # fail before any work
    # 1. documents, validation held out by document
    if cfg.dataset_name:
        if cfg.train_files:
            raise ValueError("pass either train_files or dataset_name, not both")
        train_ds, val_ds = load_hub_documents(
            cfg.dataset_name, cfg.dataset_config_name, cfg.text_column, cfg.streaming,
            cfg.validation_fraction, cfg.validation_documents, cfg.seed,
        )
        train_docs = val_docs = None
        tokenizer_texts = (
            (row["text"] for row in train_ds.take(cfg.tokenizer_train_documents)) if cfg.streaming
            else train_ds["text"]
        )
    else:
        train_docs, val_docs = load_text_documents(cfg.train_files, cfg.clean_text, cfg.validation_fraction)
        train_ds = val_ds = None
        tokenizer_texts = train_docs
    # 2. tokenizer and model
    tokenizer = load_or_train_tokenizer(cfg, tokenizer_texts)
    config = build_model_config(cfg, tokenizer)
    tokenizer.model_max_length = config.max_position_embeddings
    set_seed(cfg.seed)
    model = GPTLiteForCausalLM._from_config(config, attn_implementation=cfg.attn_implementation)
    # 3. packed blocks (the main process tokenizes first, so the others reuse the datasets cache)
    with state.main_process_first():
        data = build_lm_data(tokenizer, block_size, train_docs, val_docs, train_ds, val_ds)
    train_loader, eval_loader = lm_dataloaders(
        data, cfg.per_device_batch_size, cfg.per_device_eval_batch_size, cfg.seed
    )
    if state.is_main_process:
        n_train = len(data.train) if hasattr(data.train, "__len__") else "streamed"
        n_val = len(data.validation) if data.validation is not None else 0
        print(f"data: {n_train} training blocks, {n_val} validation blocks of {block_size} tokens, "
              f"vocabulary {len(tokenizer)}", flush=True)
    # 4. train
    return train(model, train_loader, eval_loader, tokenizer, cfg, compute_metrics=lm_metrics(data.eval_num_characters),
                 run_config=dataclasses.asdict(cfg))


def generate_from_folder(folder: str, prompt: str = DEMO_PROMPT, max_new_tokens: int = 60, seed: int = 0) -> str:
    """Load a saved model folder with the Auto classes and sample a continuation of ``prompt``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import hf_gptlite  # noqa: F401  (registers the Auto classes)

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    torch.manual_seed(seed)
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=True, top_k=40, temperature=0.8,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(ids[0], skip_special_tokens=True)


def run_main_job(cfg: PretrainConfig) -> dict:
    """``gptlite-main``: pretraining, then a summary and a sample from the saved folder (main process)."""
    metrics = run_pretraining(cfg)
    if distributed_state().is_main_process:
        shown = {k: metrics[k] for k in ("eval_loss", "eval_perplexity", "eval_bits_per_char", "train_runtime_s",
                                         "tokens_per_s", "global_step", "num_parameters") if k in metrics}
        print("\nfinal metrics:", json.dumps(shown, indent=2))
        print(f"model folder: {cfg.output_dir} (AutoModelForCausalLM.from_pretrained loads it after `import hf_gptlite`)")
        print(f"loss curve:   {cfg.output_dir}/loss_curve.png")
        text = generate_from_folder(cfg.output_dir)
        print(f"\nsample from the saved model:\n  {text}")
        metrics["demo_sample"] = text
    return metrics


__all__ = ["run_pretraining", "run_main_job", "generate_from_folder", "load_or_train_tokenizer"]
