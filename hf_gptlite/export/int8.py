"""int8 weights on CPU through transformers' own ``quantization_config`` (torchao ``Int8WeightOnlyConfig`` in a
``TorchAoConfig``): every ``nn.Linear`` of the blocks becomes a torchao ``Int8Tensor`` (one int8 per weight and one
scale per output row); the output head stays fp32 (transformers' torchao integration leaves the output
embedding as it is, tied or not). ``save_pretrained`` writes the int8 tensors to model.safetensors with torchao's metadata and
``from_pretrained`` reads them back as they were: no re-quantization, the same logits.

Speed, measured (docs/export.md, bench/export.py): torchao's weight-only kernel on CPU converts the int8 weight to
the activations' dtype at every call and then runs an fp32 matmul, so batch-1 decoding is SLOWER than fp32 on the
machines measured; the int8 folder is a quarter of the blocks' bytes on disk and in memory, not a faster model.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import MissingInputError, OutputInTheWayError

TORCHAO_HINT = "pip install 'hf_gptlite[export]' (torchao 0.18 works with torch 2.13)"


def int8_quantization_config():
    """``TorchAoConfig(Int8WeightOnlyConfig())``: pass it as ``from_pretrained(..., quantization_config=...)``."""
    try:
        from torchao.quantization import Int8WeightOnlyConfig
    except ImportError as err:
        raise MissingInputError(f"torchao is not installed: {TORCHAO_HINT}") from err
    from transformers import TorchAoConfig

    return TorchAoConfig(Int8WeightOnlyConfig())


def load_int8(model_dir: str | os.PathLike):
    """A GPTLite folder (fp32, or already int8) loaded on CPU with int8 weights, in eval mode."""
    from transformers import AutoModelForCausalLM

    import hf_gptlite  # noqa: F401  (registers the Auto classes)

    quantized = _is_quantized(model_dir)
    kwargs = {} if quantized else {"quantization_config": int8_quantization_config()}
    if quantized:
        int8_quantization_config()  # the same clear error when torchao is missing
    return AutoModelForCausalLM.from_pretrained(str(model_dir), device_map="cpu", **kwargs).eval()


def _is_quantized(model_dir) -> bool:
    import json

    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    return "quantization_config" in config


def save_int8(model_dir: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """Write an int8 copy of the GPTLite folder ``model_dir`` (weights, config with its quantization_config,
    tokenizer) to ``output_dir``, which must be absent or empty. Returns ``output_dir``."""
    from transformers import AutoTokenizer

    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise OutputInTheWayError(
            f"output folder {str(output_dir)!r} exists and is not empty; pick a new one"
        )
    model = load_int8(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


__all__ = ["int8_quantization_config", "load_int8", "save_int8"]
