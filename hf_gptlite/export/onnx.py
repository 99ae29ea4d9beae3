"""ONNX and OpenVINO through transformers' own exporters (``transformers.exporters``, transformers >= 5.24).

    model dir -> OnnxExporter / OpenVINOExporter .export_for_generation(model, sample prompt, dynamic shapes)
    -> two graphs: "prefill" (input_ids, position_ids -> logits, the cache's keys/values per layer) and "decode"
    (one new token per sequence + the cache -> logits, the grown cache) -> output_dir (prefill.onnx, decode.onnx +
    their .data, or openvino_*.xml/.bin; export.json; config.json)

The exporters trace the model with ``torch.export`` (the modeling file's fast paths step aside under it); during
the export the growing-cache fast path is switched off, so the captured cache is transformers' plain
``DynamicCache`` and the graphs' inputs are the keys and values alone. :func:`greedy_generate` decodes through the
two graphs on their runtime (ONNX Runtime / OpenVINO) with transformers' runners: the same tokens as
``model.generate(do_sample=False)`` (tests/export/test_onnx.py). The prompts of one call share a length (the
graphs take no attention mask).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from ..errors import MissingInputError, OutputInTheWayError

RUNTIME_PACKAGES = {"onnx": ("onnxruntime", "onnx", "onnxscript"), "openvino": ("openvino",)}


def _check_installed(fmt: str) -> None:
    import importlib.util

    missing = [p for p in RUNTIME_PACKAGES[fmt] if importlib.util.find_spec(p) is None]
    if missing:
        raise MissingInputError(
            f"--format {fmt} needs {', '.join(missing)}: pip install 'hf_gptlite[export]'"
        )


@contextlib.contextmanager
def _fast_paths_off():
    """Every fast path off while exporting: the graph is the plain model (a plain DynamicCache is captured, and no
    state a fast path kept from earlier eager calls, such as the output layer's tuned layout, becomes a constant)."""
    from .. import gptlite_kernels as k

    before = {name for name in k.FAST_PATHS if k.enabled(name)}
    k.set_fast_paths("none")
    try:
        yield
    finally:
        k.set_fast_paths(",".join(sorted(before)) or "none")


def _exporters_cache_pytree() -> None:
    """Make DynamicCache's pytree registration the exporters' own. transformers' exporters register the cache
    classes once per process and keep a registration they find; ``register_dynamic_cache_export_support``
    (transformers' torch.export helper) registers DynamicCache differently, and after it the export failed
    ("Constant tensor lifted_tensor_N is not in the constants dictionary") and a saved folder's cache spec could not
    be read back. Such a registration is replaced (torch.export of a DynamicCache works with the exporters' one)."""
    from torch.fx import _pytree as fx_pytree
    from torch.utils import _pytree as pytree
    from transformers.cache_utils import DynamicCache
    from transformers.exporters.exporter_dynamo import _pytree_flatten, register_pytree_node

    node = pytree.SUPPORTED_NODES.get(DynamicCache)
    if node is not None and node.flatten_fn is not _pytree_flatten:
        pytree._deregister_pytree_node(DynamicCache)
        fx_pytree.SUPPORTED_NODES.pop(DynamicCache, None)  # the helper's flatten spec for exported programs' inputs
        fx_pytree.SUPPORTED_NODES_EXACT_MATCH.pop(DynamicCache, None)
    register_pytree_node(DynamicCache)


def export_for_runtime(model, fmt: str = "onnx", sample_length: int = 8):
    """Export ``model`` (a causal LM in eval mode, fp32) as prefill + decode graphs for ``fmt`` ("onnx" or
    "openvino") with dynamic batch and sequence axes; returns transformers' ``ExportedModel``."""
    _check_installed(fmt)
    _exporters_cache_pytree()
    from transformers.exporters import OnnxConfig, OnnxExporter, OpenVINOConfig, OpenVINOExporter

    # OpenVINO: stateful=False keeps the cache as inputs/outputs; the stateful decode graph (cache in OpenVINO
    # variables, the default) cannot be driven by transformers' runner: it returns the logits alone (StopIteration)
    exporter, config = (
        (OnnxExporter(), OnnxConfig(dynamic=True))
        if fmt == "onnx"
        else (OpenVINOExporter(), OpenVINOConfig(dynamic=True, stateful=False))
    )
    # batch 2: a batch of 1 would be specialized to 1 by torch.export
    ids = torch.randint(
        3, model.config.vocab_size, (2, sample_length), generator=torch.Generator().manual_seed(0)
    )
    with _fast_paths_off(), torch.no_grad():
        return exporter.export_for_generation(
            model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, config
        )


def save_for_runtime(model, output_dir: str | os.PathLike, fmt: str = "onnx") -> Path:
    """Export ``model`` (see :func:`export_for_runtime`) into ``output_dir`` (absent or empty), with its tokenizer
    files copied when ``model`` came from a folder that has them. Returns ``output_dir``."""
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise OutputInTheWayError(
            f"output folder {str(output_dir)!r} exists and is not empty; pick a new one"
        )
    exported = export_for_runtime(model, fmt)
    exported.save_pretrained(output_dir)
    return output_dir


def load_exported(folder: str | os.PathLike, threads: int | None = None):
    """An exported folder loaded on its runtime (CPU); ``threads`` caps the runtime's threads."""
    from transformers.exporters import ExportedModel

    _exporters_cache_pytree()
    exported = ExportedModel.from_pretrained(str(folder))
    _check_installed(str(exported.export_format))
    kwargs = {}
    if threads and exported.export_format == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        kwargs["session_options"] = options
    elif threads:
        kwargs["config"] = {"INFERENCE_NUM_THREADS": threads}
    return exported.to(**kwargs)


def greedy_generate(exported, input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Greedy decoding through an exported prefill + decode pair: (B, T) prompt ids of one length ->
    (B, T + max_new_tokens) ids, as ``model.generate(input_ids, do_sample=False)`` without an end token."""
    B, T = input_ids.shape
    out = exported.runners["prefill"](input_ids=input_ids, position_ids=torch.arange(T).expand(B, T))
    ids = [input_ids]
    for step in range(max_new_tokens):
        ids.append(out.logits[:, -1].argmax(-1, keepdim=True))
        if step == max_new_tokens - 1:
            break
        position = torch.full((B, 1), T + step, dtype=torch.long)
        out = exported.runners["decode"](input_ids=ids[-1], position_ids=position, cache=out.cache)
    return torch.cat(ids, dim=1)


__all__ = ["export_for_runtime", "greedy_generate", "load_exported", "save_for_runtime"]
