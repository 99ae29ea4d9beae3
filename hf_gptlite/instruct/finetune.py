"""Instruction fine-tuning (the book's chapter 7) on the shared loop:

    records (data.py) -> chat template -> masked collate -> training.train (LM metrics) -> model folder with the
    chat template and generation defaults (LoRA merged; the adapter kept in lora_adapter/)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from ..errors import InputValueError, as_user_error
from ..loading import PRETRAINED_HINT, check_model_source, check_resume_checkpoint, load_causal_lm
from ..pretrain.metrics import lm_metrics
from ..tokenization import ensure_pad_token
from ..training import TrainingConfig, check_training_output, train
from ..training.artifacts import LORA_TARGET_MODULES, attach_lora
from .data import InstructionCollator, load_alpaca_records, prepare_examples, set_chat_template, split_records


@dataclass
class FinetuneInstructConfig(TrainingConfig):
    """``recipes/finetune_instruct.py``. The defaults are the CPU run: the main job's pretrained model, the
    shipped 1,100 records, full fine-tuning."""

    model_name_or_path: str = field(default="runs/pretrain_pt", metadata={
        "help": "a pretrained GPTLite folder (default: the main job's), or GPT-2 weights (converted)"})
    output_dir: str = field(default="runs/instruct", metadata={"help": "run folder (checkpoints, logs, model)"})
    data: str | None = field(default=None, metadata={"help": "JSON/JSONL file or Hub dataset id (None: the shipped set)"})
    data_split: str = field(default="train", metadata={"help": "the Hub split read before the 85/10/5 split"})
    from_scratch: bool = field(default=False, metadata={
        "help": "same architecture and tokenizer, random weights (the no-pretraining ablation)"})
    max_train_records: int | None = field(default=None, metadata={"help": "use only the first N training records"})
    mask_prompt: bool = field(default=False, metadata={"help": "loss on response tokens only (not the prompt)"})
    max_length: int | None = field(default=None, metadata={"help": "truncate sequences (None: the model's context)"})
    num_epochs: float = 2.0
    per_device_batch_size: int = 8
    learning_rate: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 10
    logging_steps: int = 5
    eval_steps: int = 50
    dropout: float | None = field(default=None, metadata={"help": "override the model's dropout (None: keep)"})
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters (PEFT) instead of all weights; "
                                                        "they are merged into the saved model"})
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: str = field(default=",".join(LORA_TARGET_MODULES),
                                     metadata={"help": "comma-separated module names"})
    generation_max_new_tokens: int = field(default=256, metadata={
        "help": "default max_new_tokens saved in generation_config.json (capped at half the context)"})

    def __post_init__(self):
        super().__post_init__()
        if self.max_train_records is not None and self.max_train_records < 1:
            raise InputValueError(f"max_train_records must be >= 1 (or None), got {self.max_train_records}")
        if self.max_length is not None and self.max_length < 2:
            raise InputValueError(f"max_length must be at least 2 tokens (or None), got {self.max_length}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise InputValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.lora and (self.lora_r < 1 or self.lora_alpha < 1 or not 0.0 <= self.lora_dropout < 1.0):
            raise InputValueError(f"lora_r and lora_alpha must be >= 1 and lora_dropout in [0, 1), got "
                                  f"{self.lora_r}, {self.lora_alpha}, {self.lora_dropout}")


def instruction_dataloaders(records: dict, tokenizer, batch_size: int, eval_batch_size: int | None,
                            max_length: int | None, mask_prompt: bool, seed: int):
    """Shuffled train batches and in-order validation batches of :class:`InstructionCollator` output."""
    from torch.utils.data import DataLoader

    collate = InstructionCollator(tokenizer.pad_token_id, tokenizer.eos_token_id, mask_prompt, max_length)
    train = prepare_examples(records["train"], tokenizer, max_length, mask_prompt)
    val = prepare_examples(records["validation"], tokenizer, max_length, mask_prompt) if records["validation"] else []
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, collate_fn=collate,
                              generator=torch.Generator().manual_seed(seed))
    val_loader = DataLoader(val, batch_size=eval_batch_size or batch_size, collate_fn=collate) if val else None
    return train_loader, val_loader


def run_finetune_instruct(cfg: FinetuneInstructConfig) -> dict:
    """Fine-tune on Alpaca records with the shared loop; the saved folder holds the model (LoRA merged), the
    tokenizer with the Alpaca chat template, metrics.json, training_config.json and loss_curve.png. Every input
    (model, data, LoRA modules, a checkpoint to resume) is checked before the loop writes ``output_dir``."""
    from transformers import set_seed

    set_seed(cfg.seed)
    check_training_output(cfg)  # writable, and no other run in it unless resumed or overwritten
    check_model_source(cfg.model_name_or_path, PRETRAINED_HINT)
    split = split_records(load_alpaca_records(cfg.data, cfg.data_split))
    split["train"] = split["train"][: cfg.max_train_records]
    if not split["train"]:
        raise InputValueError(f"no training records in {cfg.data or 'the shipped instructions'} (the first 85% "
                              "of the records train)")
    model, tokenizer = load_causal_lm(cfg.model_name_or_path)
    if cfg.from_scratch:
        model = type(model)(type(model.config).from_dict(model.config.to_dict()))
    set_chat_template(ensure_pad_token(tokenizer))
    context = model.config.max_position_embeddings
    max_length = min(cfg.max_length or context, context)
    if cfg.dropout is not None:
        model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = cfg.dropout
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = cfg.dropout
    model.generation_config.max_new_tokens = min(cfg.generation_max_new_tokens, context // 2)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    train_loader, val_loader = instruction_dataloaders(split, tokenizer, cfg.per_device_batch_size,
                                                       cfg.per_device_eval_batch_size, max_length,
                                                       cfg.mask_prompt, cfg.seed)
    if not len(train_loader.dataset):
        raise InputValueError(f"every training record's prompt fills max_length={max_length} tokens, so "
                              "--mask_prompt leaves nothing to learn; raise --max_length or shorten the prompts")
    print(f"data: {len(train_loader.dataset)} train / {len(split['test'])} test / {len(split['validation'])} "
          f"validation records; max_length {max_length}; mask_prompt {cfg.mask_prompt}", flush=True)
    if cfg.lora:  # the loop saves the merged model (and the adapter in lora_adapter/)
        with as_user_error(ValueError, context="--lora_target_modules"):  # names the model lacks
            model = attach_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules)
    check_resume_checkpoint(cfg.resume_from_checkpoint, cfg.output_dir, model)
    return train(model, train_loader, val_loader, tokenizer, cfg, compute_metrics=lm_metrics(),
                 run_config=dataclasses.asdict(cfg))


__all__ = ["FinetuneInstructConfig", "instruction_dataloaders", "run_finetune_instruct"]
