"""The pretraining job's settings: ``PretrainConfig`` is the one home of its defaults, which are the CPU main job
(the embedded Portuguese novels, a 1.9M-parameter model chosen by measurement in bench/sweep_pretrain.py, about
10 minutes on 2 cores). ``recipes/pretrain.py``, ``gptlite-main`` and ``python -m hf_gptlite pretrain`` parse it;
YAML files in ``recipes/configs/`` override it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..configuration_gptlite import GPTLiteConfig
from ..training import TrainingConfig


@dataclass
class PretrainConfig(TrainingConfig):
    # ---- where the run goes and how long it trains (the CPU main job's defaults)
    output_dir: str = field(default="runs/pretrain_pt", metadata={"help": "run folder (checkpoints, logs, model)"})
    max_steps: int = field(default=5000, metadata={"help": "optimizer updates, a cap (2 CPU cores fit ~950-3,500 in the time budget)"})
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
        default=None, metadata={"help": "UTF-8 text files (one document each), folders, globs, or .jsonl/.parquet/.csv files "
                                     "(one document per row of text_column); default: the embedded novels"}
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
    tokenizer_train_mb: float = field(
        default=256.0, metadata={"help": "text sampled (evenly) to train the tokenizer, in MB: bounds its time"}
    )
    token_cache_dir: str | None = field(default=None, metadata={
        "help": "where tokenized corpora are cached (default: $HF_GPTLITE_TOKEN_CACHE or $HF_HOME/hf_gptlite/token_cache)"})
    dataloader_num_workers: int = field(
        default=0, metadata={"help": "streaming: worker processes that tokenize and pack the stream"}
    )
    # ---- tokenizer
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "a saved tokenizer (absent: train a byte-level BPE on the training text)"}
    )
    vocab_size: int = field(default=8192, metadata={"help": "vocabulary of the tokenizer trained here"})
    tokenizer_min_frequency: int = 2
    # ---- model
    model_preset: str = field(default="cpu-main", metadata={
        "help": "tiny | cpu-main (the main job: 4 layers, hidden 128, 2 heads, context 256) | cpu-small | gpt2-small | ..."})
    hidden_size: int | None = field(default=None, metadata={"help": "overrides the preset"})
    num_hidden_layers: int | None = field(default=None, metadata={"help": "overrides the preset"})
    num_attention_heads: int | None = field(default=None, metadata={"help": "overrides the preset"})
    intermediate_size: int | None = field(default=None, metadata={"help": "overrides the preset (None: 4x hidden)"})
    max_position_embeddings: int | None = field(default=None, metadata={"help": "overrides the preset"})
    dropout: float = field(default=0.0, metadata={"help": "hidden and attention dropout"})
    tie_word_embeddings: bool = field(default=True, metadata={"help": "output layer shares the token embedding"})
    block_size: int | None = field(
        default=None, metadata={"help": "training context in tokens (None: the model's max_position_embeddings)"}
    )
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa | eager | flash_attention_2 ..."})


def build_model_config(cfg: PretrainConfig, tokenizer=None) -> GPTLiteConfig:
    """The preset with the size overrides and dropout; with ``tokenizer``, its vocabulary and special ids."""
    from ..tokenization import align_config_with_tokenizer

    overrides = {k: getattr(cfg, k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                              "intermediate_size", "max_position_embeddings")
                 if getattr(cfg, k) is not None}
    config = GPTLiteConfig.from_preset(
        cfg.model_preset, hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
        tie_word_embeddings=cfg.tie_word_embeddings, **overrides
    )
    return align_config_with_tokenizer(config, tokenizer) if tokenizer is not None else config


__all__ = ["PretrainConfig", "build_model_config"]
