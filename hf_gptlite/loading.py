"""Model folders as the tasks read them: one check of a ``save_pretrained`` folder, one loader of a pretrained
causal LM (a GPTLite folder or Hub id, or GPT-2 weights converted to GPTLite) with its tokenizer."""

from __future__ import annotations

import json
import os
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")


class ModelFolderError(FileNotFoundError):
    """A model folder that is missing, or lacks what ``from_pretrained`` needs."""


def check_model_dir(model_dir: str | os.PathLike, model_type: str | None = "gptlite", hint: str = "") -> Path:
    """A ``save_pretrained`` folder with config.json (of ``model_type``, unless None), safetensors weights and a
    tokenizer; otherwise an error that names what is missing (and ``hint``: how to make one)."""
    model_dir = Path(model_dir)
    hint = f"; {hint}" if hint else ""
    if not model_dir.is_dir():
        raise ModelFolderError(f"model folder {str(model_dir)!r} does not exist or is not a folder{hint}")
    if not (model_dir / "config.json").is_file():
        peft = " (it looks like a PEFT adapter: merge_and_unload() then save_pretrained first)" if (
            model_dir / "adapter_config.json").is_file() else ""
        raise ModelFolderError(f"no config.json in model folder {str(model_dir)!r}{peft}{hint}")
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{model_dir / 'config.json'} is not valid JSON: {err}") from err
    if model_type is not None and config.get("model_type") != model_type:
        raise ValueError(f"{model_dir / 'config.json'} has model_type={config.get('model_type')!r}, "
                         f"expected {model_type!r}")
    has_weights = (model_dir / "model.safetensors").is_file() or (model_dir / "model.safetensors.index.json").is_file()
    if not has_weights:
        pickles = sorted(p.name for p in model_dir.glob("*.bin")) + sorted(p.name for p in model_dir.glob("*.pt"))
        extra = f"; found only {pickles}: save with safetensors (the default of save_pretrained)" if pickles else ""
        raise ModelFolderError(f"no model.safetensors (or model.safetensors.index.json) in {str(model_dir)!r}{extra}")
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        raise ModelFolderError(
            f"no tokenizer files ({', '.join(TOKENIZER_FILES)}) in {str(model_dir)!r}: "
            "call tokenizer.save_pretrained(model_dir) so users can run the model"
        )
    return model_dir


def load_model_config(name_or_path: str | os.PathLike, **hub_kwargs):
    """``AutoConfig`` of a local folder or a Hub id, with an error that says which it is not."""
    from transformers import AutoConfig

    import hf_gptlite  # noqa: F401  (registers the Auto classes)

    source = str(name_or_path)
    if Path(source).exists() and not (Path(source) / "config.json").is_file():
        raise ModelFolderError(f"{source} has no config.json: not a save_pretrained model folder")
    try:
        return AutoConfig.from_pretrained(source, **hub_kwargs)
    except OSError as e:
        raise ModelFolderError(f"cannot load a model from {source!r}: no such folder (or Hub id reachable). Train "
                               f"one first (e.g. `gptlite-main`) or pass --model_name_or_path") from e


def load_causal_lm(name_or_path: str | os.PathLike, **kwargs):
    """(model, tokenizer) of a pretrained causal LM: a GPTLite folder or Hub id, or GPT-2 weights
    (``model_type == "gpt2"``) converted to ``GPTLiteForCausalLM`` with GPT-2's tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .modeling_gptlite import GPTLiteForCausalLM
    from .tokenization import load_gpt2_tokenizer

    config = load_model_config(name_or_path)
    if config.model_type == "gpt2":
        return GPTLiteForCausalLM.from_gpt2(str(name_or_path)), load_gpt2_tokenizer(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(str(name_or_path), **kwargs)
    return model, AutoTokenizer.from_pretrained(str(name_or_path))


__all__ = ["ModelFolderError", "TOKENIZER_FILES", "check_model_dir", "load_model_config", "load_causal_lm"]
