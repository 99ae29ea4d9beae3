"""``python -m hf_gptlite export --format onnx|openvino|int8 --model_dir DIR --output_dir OUT``: one command for the
folder formats (GGUF, one file, is ``export_gguf``). Every input is checked before anything is loaded or written."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import OutputInTheWayError

FORMATS = ("onnx", "openvino", "int8")


@dataclass
class ExportConfig:
    model_dir: str = field(metadata={"help": "A GPTLite save_pretrained folder (weights + tokenizer)."})
    output_dir: str = field(metadata={"help": "The folder to write (absent or empty)."})
    format: str = field(
        default="onnx",
        metadata={
            "help": "onnx / openvino: prefill + decode graphs through "
            "transformers' exporters; int8: torchao int8 weights.",
            "choices": list(FORMATS),
        },
    )


def run_export(config: ExportConfig) -> Path:
    from transformers import AutoTokenizer

    from ..loading import check_model_dir
    from . import int8, onnx

    model_dir = check_model_dir(config.model_dir, hint="pass a save_pretrained folder")
    out = Path(config.output_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputInTheWayError(f"output folder {str(out)!r} exists and is not empty; pick a new one")
    start = time.perf_counter()
    if config.format == "int8":
        int8.int8_quantization_config()  # torchao installed?
        int8.save_int8(model_dir, out)
    else:
        onnx._check_installed(config.format)
        from .gguf import load_for_export

        model, tokenizer = load_for_export(model_dir)
        onnx.save_for_runtime(model, out, config.format)
        tokenizer.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(out))  # the folder is usable as it is
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    print(f"wrote {out} ({config.format}, {size:.1f} MiB, {time.perf_counter() - start:.0f} s)")
    return out


__all__ = ["FORMATS", "ExportConfig", "run_export"]
