"""Pretraining a GPTLite from scratch: text -> tokenizer -> packed blocks -> ``training.train`` -> model folder.

``PretrainConfig`` is the one home of the pretraining defaults: they are the CPU main job (the embedded
Portuguese novels, a ~5M-parameter model, about 10 minutes on 2 cores). ``recipes/pretrain.py`` and
``python -m hf_gptlite.main`` parse it; YAML files in ``recipes/configs/`` override it for other runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from accelerate.utils import set_seed

from .configuration_gptlite import GPTLiteConfig
from .data.lm import build_lm_data, check_block_size, lm_dataloaders, load_hub_documents, load_text_documents
from .modeling_gptlite import GPTLiteForCausalLM
from .training import TrainingConfig, distributed_state, train


@dataclass
class PretrainConfig(TrainingConfig):
    # ---- where the run goes and how long it trains (the CPU main job's defaults)
    output_dir: str = field(default="runs/pretrain_pt", metadata={"help": "run folder (checkpoints, logs, model)"})
    max_steps: int = field(default=2000, metadata={"help": "optimizer updates (a cap: the time budget binds first on CPU)"})
    max_train_minutes: float | None = field(
        default=8.5, metadata={"help": "time budget in minutes (0: none); lowers max_steps and the cosine horizon to fit"}
    )
    per_device_batch_size: int = 8  # x 256 tokens = 2,048 tokens per step: many small steps suit a short run
    learning_rate: float = 2e-3
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    logging_steps: int = 10
    eval_steps: int = 100
    eval_max_batches: int | None = 8
    save_steps: int = 200
    sample_prompt: str | None = field(default="Era uma vez um rapaz que", metadata={"help": "prompt for samples"})
    # ---- data
    train_files: list[str] | None = field(
        default=None, metadata={"help": "UTF-8 text files, one document each (default: the embedded novels)"}
    )
    clean_text: bool | None = field(
        default=None, metadata={"help": "apply clean_book_text (default: only to the embedded novels)"}
    )
    validation_fraction: float = field(
        default=0.05, metadata={"help": "the last part of each text file held out for validation"}
    )
    dataset_name: str | None = field(default=None, metadata={"help": "a datasets Hub corpus instead of files"})
    dataset_config_name: str | None = None
    text_column: str = "text"
    streaming: bool = field(default=False, metadata={"help": "stream the Hub corpus (larger than memory)"})
    validation_documents: int = field(default=1000, metadata={"help": "streaming: rows held out for validation"})
    tokenizer_train_documents: int = field(
        default=50_000, metadata={"help": "streaming: rows used to train the tokenizer"}
    )
    # ---- tokenizer
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "a saved tokenizer (absent: train a byte-level BPE on the training text)"}
    )
    vocab_size: int = field(default=8192, metadata={"help": "vocabulary of the tokenizer trained here"})
    tokenizer_min_frequency: int = 2
    # ---- model
    model_preset: str = field(default="cpu-small", metadata={"help": "tiny | cpu-small | gpt2-small | ..."})
    hidden_size: int | None = field(default=None, metadata={"help": "overrides the preset"})
    num_hidden_layers: int | None = field(default=None, metadata={"help": "overrides the preset"})
    num_attention_heads: int | None = field(default=None, metadata={"help": "overrides the preset"})
    intermediate_size: int | None = field(default=None, metadata={"help": "overrides the preset (None: 4x hidden)"})
    max_position_embeddings: int | None = field(default=None, metadata={"help": "overrides the preset"})
    dropout: float = field(default=0.0, metadata={"help": "hidden and attention dropout"})
    block_size: int | None = field(
        default=None, metadata={"help": "training context in tokens (None: the model's max_position_embeddings)"}
    )
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa | eager | flash_attention_2 ..."})


def build_model_config(cfg: PretrainConfig, tokenizer=None) -> GPTLiteConfig:
    """The preset with the size overrides and dropout; with ``tokenizer``, its vocabulary and special ids."""
    from .tokenization import align_config_with_tokenizer

    overrides = {k: getattr(cfg, k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                              "intermediate_size", "max_position_embeddings")
                 if getattr(cfg, k) is not None}
    config = GPTLiteConfig.from_preset(
        cfg.model_preset, hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout, **overrides
    )
    return align_config_with_tokenizer(config, tokenizer) if tokenizer is not None else config


def load_or_train_tokenizer(cfg: PretrainConfig, texts):
    """``tokenizer_name_or_path`` when given; else a byte-level BPE trained on ``texts`` on the main process,
    saved to ``output_dir/tokenizer`` and loaded from there by the other processes."""
    from transformers import AutoTokenizer

    from .tokenization import train_bpe_tokenizer

    if cfg.tokenizer_name_or_path:
        tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer_name_or_path)
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
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
    return train(model, train_loader, eval_loader, tokenizer, cfg, eval_num_characters=data.eval_num_characters,
                 run_config=dataclasses.asdict(cfg))


__all__ = ["PretrainConfig", "run_pretraining", "build_model_config", "load_or_train_tokenizer"]
