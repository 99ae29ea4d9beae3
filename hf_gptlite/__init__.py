"""hf_gptlite: a GPT-2-style model written from scratch, registered with transformers' Auto classes."""

import logging

import torch

if not torch.cuda.is_available():
    # transformers imports torchao (the int8 export's backend) whenever it is installed; on a CPU build of torch its
    # import logs a warning per CUDA-only kernel library it cannot load, and torch a deprecation per enum torchao
    # registers, on every command. Those lines say nothing about a CPU run: drop them, keep every other warning.
    logging.getLogger("torchao").addFilter(lambda r: not r.getMessage().startswith("Failed to load"))
    logging.getLogger("torch.utils._pytree").addFilter(
        lambda r: "is an Enum subclass and is now natively supported" not in r.getMessage())

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
)

from .configuration_gptlite import PRESETS, GPTLiteConfig
from .modeling_gptlite import (
    GPTLiteForCausalLM,
    GPTLiteForSequenceClassification,
    GPTLiteModel,
    GPTLitePreTrainedModel,
)

__version__ = "0.1.0"

# `import hf_gptlite` makes AutoModel* resolve model_type "gptlite" without trust_remote_code ...
AutoConfig.register("gptlite", GPTLiteConfig, exist_ok=True)
AutoModel.register(GPTLiteConfig, GPTLiteModel, exist_ok=True)
AutoModelForCausalLM.register(GPTLiteConfig, GPTLiteForCausalLM, exist_ok=True)
AutoModelForSequenceClassification.register(GPTLiteConfig, GPTLiteForSequenceClassification, exist_ok=True)
# ... and save_pretrained writes `auto_map` + the code files (the modeling pair and the kernels file it imports),
# so trust_remote_code works without it.
GPTLiteConfig.register_for_auto_class()
GPTLiteModel.register_for_auto_class("AutoModel")
GPTLiteForCausalLM.register_for_auto_class("AutoModelForCausalLM")
GPTLiteForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "PRESETS",
    "GPTLiteConfig",
    "GPTLiteForCausalLM",
    "GPTLiteForSequenceClassification",
    "GPTLiteModel",
    "GPTLitePreTrainedModel",
]
