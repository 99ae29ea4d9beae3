"""The spam task's settings: ``SpamConfig`` is the one home of its defaults (the book's chapter 6 on the project's
own CPU model: the balanced SMS split, every weight trained — the book trains only the last block of GPT-2 124M,
which on the small Portuguese-pretrained CPU model reached 77% validation accuracy against 97% for `all`).
``recipes/finetune_spam.py`` parses it; ``bench/spam.py`` overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InputValueError
from ..training import TrainingConfig
from .model import TRAINABLE_CHOICES


@dataclass
class SpamConfig(TrainingConfig):
    # ---- run
    output_dir: str = field(default="runs/spam", metadata={"help": "run folder (model, metrics, plots)"})
    num_epochs: float = field(default=3.0, metadata={"help": "passes over the training split"})
    per_device_batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 20
    logging_steps: int = 10
    eval_steps: int = field(default=0, metadata={"help": "validate every N steps (0: once per epoch)"})
    mixed_precision: str = "no"
    report_to: str = "none"
    # ---- model
    model_name_or_path: str = field(
        default="runs/pretrain_pt",
        metadata={"help": "causal-LM folder (GPTLite or GPT-2) or a GPT-2 Hub id; default: the pretraining job's"},
    )
    from_scratch: bool = field(default=False, metadata={"help": "same architecture + tokenizer, random weights"})
    trainable: str = field(
        default="all",
        metadata={"help": "head | last_block | all | lora (all: the small CPU model needs it; the book's GPT-2 "
                          "124M used last_block)"},
    )
    pooling: str = field(default="last", metadata={
        "help": "last (the head at the last real token, as GPT-2) | mean (the head averaged over the real tokens)"})
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    max_length: int | None = field(default=None, metadata={"help": "truncate messages (None: the model's context)"})
    # ---- domain-adaptive LM phase on the training texts, before the head is trained (ULMFiT / TAPT)
    lm_adapt_epochs: float = field(default=0.0, metadata={
        "help": "passes of causal-LM training over the training split's texts (packed) before classification; "
                "0: off. Never reads validation or test texts"})
    lm_adapt_steps: int = field(default=0, metadata={"help": "LM-adaptation optimizer steps (> 0: overrides epochs)"})
    lm_adapt_learning_rate: float = 3e-4
    lm_adapt_batch_size: int = field(default=16, metadata={"help": "packed blocks per LM-adaptation step"})
    lm_adapt_block_size: int | None = field(default=128, metadata={"help": "LM-adaptation block (None: context)"})
    lm_adapt_warmup_steps: int = 10
    # ---- data
    dataset_name_or_path: str | None = field(
        default=None, metadata={"help": "Hub data set id or CSV/TSV/JSONL file (default: the shipped SMS collection)"}
    )
    text_column: str = "text"
    label_column: str = "label"
    balanced: bool = field(default=True, metadata={"help": "down-sample ham to the number of spam (the book)"})
    split_seed: int = field(default=123, metadata={"help": "seed of the balancing and the 70/10/20 split"})
    split_dir: str | None = field(
        default=None, metadata={"help": "where the split is written / reused (None: OUTPUT_DIR/split)"}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.trainable not in TRAINABLE_CHOICES:
            raise InputValueError(f"trainable must be one of {TRAINABLE_CHOICES}, got {self.trainable!r}")
        if self.pooling not in ("last", "mean"):
            raise InputValueError(f"pooling must be 'last' or 'mean', got {self.pooling!r}")
        if self.lora_r < 1 or self.lora_alpha < 1 or not 0.0 <= self.lora_dropout < 1.0:
            raise InputValueError(f"lora_r and lora_alpha must be >= 1 and lora_dropout in [0, 1), got "
                                  f"{self.lora_r}, {self.lora_alpha}, {self.lora_dropout}")
        if self.lm_adapt_block_size is not None and self.lm_adapt_block_size < 1:
            raise InputValueError(f"lm_adapt_block_size must be >= 1 (or None: the model's context), got "
                                  f"{self.lm_adapt_block_size}")
        if self.max_length is not None and self.max_length < 2:
            raise InputValueError(f"max_length must be at least 2 tokens (or None), got {self.max_length}")
        if self.lm_adapt_epochs < 0 or self.lm_adapt_steps < 0 or self.lm_adapt_batch_size < 1:
            raise InputValueError("lm_adapt_epochs and lm_adapt_steps must be >= 0 and lm_adapt_batch_size >= 1, got "
                                  f"{self.lm_adapt_epochs}, {self.lm_adapt_steps}, {self.lm_adapt_batch_size}")


__all__ = ["SpamConfig"]
