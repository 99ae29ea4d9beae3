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

from ..errors import InputValueError, MissingInputError, as_user_error
from ..loading import check_resume_checkpoint, check_tokenizer_source
from ..modeling_gptlite import GPTLiteForCausalLM
from ..tokenization import BYTE_ALPHABET_SIZE, SPECIAL_TOKENS, ensure_pad_token
from ..training import check_training_output, distributed_state, train
from .config import PretrainConfig, build_model_config
from .data import (
    build_lm_data,
    check_block_size,
    dataset_corpus,
    lm_data_from_corpus,
    lm_dataloaders,
    load_corpus,
    load_hub_documents,
    sample_text,
)
from .metrics import lm_metrics

DEMO_PROMPT = "A casa ficava no alto da rua, e"


def _load_or_train_tokenizer(cfg: PretrainConfig, texts, corpus=None):
    """(tokenizer, trained here and not saved yet): ``tokenizer_name_or_path`` when given, the run's own when
    resuming, a byte-level BPE trained on ``texts`` on the main process (cached beside the token cache when the
    ``corpus`` is known: a later run over the same corpus with the same settings reuses it, reading no text), or
    (other processes) the one the main process saved to ``output_dir/tokenizer``."""
    from transformers import AutoTokenizer

    from ..data.token_cache import open_tokenizer_cache
    from ..tokenization import train_bpe_tokenizer

    if cfg.tokenizer_name_or_path:
        try:
            tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer_name_or_path)
        except OSError as e:  # checked to be a tokenizer folder or a reachable Hub id: say why it did not load
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise MissingInputError(f"cannot load the tokenizer {cfg.tokenizer_name_or_path!r}: {first}") from e
        return ensure_pad_token(tokenizer), False
    folder = Path(cfg.output_dir) / "tokenizer"
    if cfg.resume_from_checkpoint and (folder / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(folder), False  # a resumed run keeps its tokenizer
    if not distributed_state().is_main_process:
        return AutoTokenizer.from_pretrained(folder), False

    def trained():
        if not texts:
            raise InputValueError("no training text to train a tokenizer on")
        print(f"training a {cfg.vocab_size}-token byte-level BPE tokenizer on the training text ...", flush=True)
        return train_bpe_tokenizer(texts, vocab_size=cfg.vocab_size, min_frequency=cfg.tokenizer_min_frequency,
                                   show_progress=False)

    if corpus is None:  # a streamed corpus: nothing identifies it, so nothing is cached
        return trained(), True
    settings = {"vocab_size": cfg.vocab_size, "min_frequency": cfg.tokenizer_min_frequency,
                "tokenizer_train_mb": cfg.tokenizer_train_mb, "special_tokens": list(SPECIAL_TOKENS)}
    return open_tokenizer_cache(corpus, settings, trained, cfg.token_cache_dir), True


def load_or_train_tokenizer(cfg: PretrainConfig, texts, corpus=None):
    """``tokenizer_name_or_path`` when given; else a byte-level BPE trained on ``texts`` on the main process (cached
    for ``corpus``), saved to ``output_dir/tokenizer`` and loaded from there by the other processes."""
    with distributed_state().main_process_first():
        tokenizer, trained = _load_or_train_tokenizer(cfg, texts, corpus)
        if trained:
            tokenizer.save_pretrained(Path(cfg.output_dir) / "tokenizer")
    return tokenizer


def _sampled(corpus, max_bytes: float):
    """``sample_text`` of the corpus's training part, read only when iterated (a cached tokenizer reads nothing)."""
    yield from sample_text(corpus.train, max_bytes)


def check_pretrain_inputs(cfg: PretrainConfig) -> int:
    """Every check that needs no data: the output folder, the model shape, the block size, the data and
    tokenizer sources. Returns the block size."""
    check_training_output(cfg)  # writable, and no other run in it unless resumed or overwritten
    with as_user_error(ValueError):  # an unknown preset or a bad size override
        model_config = build_model_config(cfg)
    if cfg.block_size is not None and cfg.block_size < 1:
        raise InputValueError(f"block_size must be >= 1 (or unset: the model's context), got {cfg.block_size}")
    block_size = cfg.block_size or model_config.max_position_embeddings
    check_block_size(block_size, model_config.max_position_embeddings)
    if cfg.dataset_name and cfg.train_files:
        raise InputValueError("pass either --train_files or --dataset_name, not both")
    smallest = BYTE_ALPHABET_SIZE + len(SPECIAL_TOKENS)
    if cfg.vocab_size < smallest and not cfg.tokenizer_name_or_path:
        raise InputValueError(f"vocab_size must be at least {smallest} (256 bytes + {len(SPECIAL_TOKENS)} special "
                              f"tokens), got {cfg.vocab_size}")
    if cfg.tokenizer_name_or_path:
        check_tokenizer_source(cfg.tokenizer_name_or_path)
    return block_size


def run_pretraining(cfg: PretrainConfig) -> dict:
    """The whole pretraining job; returns the final metrics (also written to ``output_dir/metrics.json``).

    Every input is checked (files, tokenizer, model shape, a checkpoint to resume) before anything is written
    into ``output_dir``: a refused run leaves it absent or as it was."""
    state = distributed_state()
    set_seed(cfg.seed)
    block_size = check_pretrain_inputs(cfg)  # fail before any work
    # 1. documents, validation held out by document (read lazily: a cached corpus is never read again)
    corpus = train_ds = val_ds = None
    if cfg.dataset_name:
        train_ds, val_ds = load_hub_documents(
            cfg.dataset_name, cfg.dataset_config_name, cfg.text_column, cfg.streaming,
            cfg.validation_fraction, cfg.validation_documents, cfg.seed,
        )
        if cfg.streaming:
            tokenizer_texts = (row["text"] for row in train_ds.take(cfg.tokenizer_train_documents))
        else:
            corpus = dataset_corpus(train_ds, validation=val_ds, validation_fraction=0, name=cfg.dataset_name)
    else:
        corpus = load_corpus(cfg.train_files, cfg.clean_text, cfg.validation_fraction, cfg.text_column, cfg.seed)
    if corpus is not None:  # a bounded sample, evenly spread over the training text
        tokenizer_texts = _sampled(corpus, cfg.tokenizer_train_mb * 1e6)
    # 2. tokenizer, model and blocks, checked on the main process before its trained tokenizer is saved (the
    # others then load that tokenizer and map the token cache the local main process built)
    with state.main_process_first():
        tokenizer, trained = _load_or_train_tokenizer(cfg, tokenizer_texts, corpus)
        with as_user_error(ValueError):  # a tokenizer that does not fit the model
            config = build_model_config(cfg, tokenizer)
        tokenizer.model_max_length = config.max_position_embeddings
        set_seed(cfg.seed)
        model = GPTLiteForCausalLM._from_config(config, attn_implementation=cfg.attn_implementation)
        check_resume_checkpoint(cfg.resume_from_checkpoint, cfg.output_dir, model)
        if corpus is not None:
            data = lm_data_from_corpus(corpus, tokenizer, block_size, cfg.token_cache_dir,
                                       builder=state.is_local_main_process,
                                       log=print if state.is_local_main_process else lambda *a: None)
        else:
            data = build_lm_data(tokenizer, block_size, train_dataset=train_ds, val_dataset=val_ds,
                                 process_index=state.process_index, num_processes=state.num_processes)
        if trained:  # every input checked: the first thing written into output_dir
            tokenizer.save_pretrained(Path(cfg.output_dir) / "tokenizer")
    train_loader, eval_loader = lm_dataloaders(
        data, cfg.per_device_batch_size, cfg.per_device_eval_batch_size, cfg.seed, cfg.dataloader_num_workers
    )
    if state.is_main_process:
        n_train = len(data.train) if hasattr(data.train, "__len__") else "streamed"
        n_val = len(data.validation) if data.validation is not None else 0
        print(f"data: {n_train} training blocks, {n_val} validation blocks of {block_size} tokens, "
              f"vocabulary {len(tokenizer)}", flush=True)
    # 3. train
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


__all__ = ["check_pretrain_inputs", "run_pretraining", "run_main_job", "generate_from_folder",
           "load_or_train_tokenizer"]
