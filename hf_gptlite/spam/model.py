"""The classifier: a pretrained GPTLite backbone with a fresh head, and which of its weights train.

    model, tokenizer = load_classifier_from_lm("runs/pretrain_pt", labels=("ham", "spam"))   # fresh `score` head
    model = set_trainable(model, "last_block")          # head | last_block | all | lora

The backbone comes from a GPTLite causal-LM folder (ours), or from GPT-2 weights (a transformers GPT-2 folder
or Hub id), converted on the fly with ``GPTLiteForCausalLM.from_gpt2``. The head pools the last real token.
"""

from __future__ import annotations

import os

from torch import nn

from ..errors import InputValueError
from ..loading import load_model_config
from ..tokenization import ensure_pad_token
from ..training.artifacts import attach_lora

TRAINABLE_CHOICES = ("head", "last_block", "all", "lora")


def _head_config(labels, pooling: str) -> dict:
    """The config values of a fresh classification head: its labels and where it reads the sequence."""
    return dict(num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
                classifier_pooling=pooling)


def load_classifier_from_lm(
    name_or_path: str | os.PathLike,
    labels=("ham", "spam"),
    from_scratch: bool = False,
    pooling: str = "last",
    **hub_kwargs,
):
    """(GPTLiteForSequenceClassification, tokenizer) from a causal-LM checkpoint, with a freshly initialised head.

    `name_or_path`: a GPTLite folder (save_pretrained of GPTLiteForCausalLM, or an earlier classifier whose head
    is replaced when the labels differ), or a GPT-2 folder / Hub id. `from_scratch=True` keeps only the
    architecture and tokenizer and initialises every weight randomly (the no-pretraining baseline). `pooling`: the
    head read at the last real token (`last`) or averaged over the real tokens (`mean`), `config.classifier_pooling`.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ..modeling_gptlite import GPTLiteForCausalLM, GPTLiteForSequenceClassification

    source = str(name_or_path)
    config = load_model_config(source, **hub_kwargs)
    if config.model_type == "gptlite":
        if from_scratch:
            config = type(config).from_dict({**config.to_dict(), **_head_config(labels, pooling)})
            model = GPTLiteForSequenceClassification(config)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                source, **_head_config(labels, pooling), ignore_mismatched_sizes=True, **hub_kwargs
            )
    elif config.model_type == "gpt2":
        lm = GPTLiteForCausalLM.from_gpt2(source, **hub_kwargs)
        lm_config = lm.config.to_dict()
        lm_config.pop("architectures", None)
        clf_config = type(lm.config).from_dict({**lm_config, **_head_config(labels, pooling)})
        model = GPTLiteForSequenceClassification(clf_config)
        if not from_scratch:
            model.transformer.load_state_dict(lm.transformer.state_dict())
        del lm
    else:
        raise InputValueError(f"{source}: model_type {config.model_type!r} is neither 'gptlite' nor 'gpt2'")
    tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(source))
    tokenizer.model_max_length = model.config.max_position_embeddings  # pipeline(truncation=True) cuts here
    model.config.pad_token_id = tokenizer.pad_token_id
    if len(tokenizer) > model.config.vocab_size:
        raise InputValueError(f"{source}: the tokenizer has {len(tokenizer)} tokens but the model only "
                              f"{model.config.vocab_size}")
    return model, tokenizer


def set_trainable(model: nn.Module, mode: str, lora_r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.0):
    """Choose which weights train; returns the model (a PEFT model for `lora`).

    head: the `score` layer only; last_block: + the last transformer block and the final norm (the book's
    default); all: everything; lora: low-rank adapters on c_attn/c_proj/c_fc with the `score` head trained fully.
    """
    if mode not in TRAINABLE_CHOICES:
        raise InputValueError(f"trainable must be one of {TRAINABLE_CHOICES}, got {mode!r}")
    if mode == "lora":
        return attach_lora(model, lora_r, lora_alpha, lora_dropout, task_type="SEQ_CLS", modules_to_save=["score"],
                           verbose=False)
    model.requires_grad_(mode == "all")
    trainable = [model.score]
    if mode == "last_block":
        trainable += [model.transformer.h[-1], model.transformer.ln_f]
    for module in trainable:
        module.requires_grad_(True)
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


__all__ = ["TRAINABLE_CHOICES", "count_parameters", "load_classifier_from_lm", "set_trainable"]
