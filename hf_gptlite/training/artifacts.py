"""What a run leaves behind, written in one place each: ``metrics.json``, the loss curve, the model folder
(LoRA adapters attached here and merged here, so the folder is a plain model every tool loads).

    write_metrics(dir, metrics)              -> dir/metrics.json (atomic; merge=True adds to what is there)
    plot_loss_curve(dir/log.jsonl, png)      -> train and validation loss against step
    attach_lora(model, r, alpha, ...)        -> a PEFT model (adapters on c_attn, c_proj, c_fc by default)
    save_model_folder(model, dir, tokenizer) -> save_pretrained (safetensors); a PEFT model is merged first and
                                                its adapter kept in dir/lora_adapter/
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from torch import nn

LOG_FILE = "log.jsonl"
METRICS_FILE = "metrics.json"
LORA_ADAPTER_DIR = "lora_adapter"
LORA_TARGET_MODULES = ("c_attn", "c_proj", "c_fc")  # every linear layer of a GPTLite / GPT-2 block


# ---- metrics.json --------------------------------------------------------------------------------
def write_metrics(directory: str | os.PathLike, metrics: dict, merge: bool = False) -> dict:
    """Write ``directory/metrics.json`` atomically; with ``merge`` the new keys are added to (and replace) those
    already there. Returns what the file now holds."""
    path = Path(directory) / METRICS_FILE
    data = json.loads(path.read_text()) if merge and path.is_file() else {}
    data.update(metrics)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return data


def read_log(path: str | os.PathLike) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_loss_curve(log_path: str | os.PathLike, png_path: str | os.PathLike) -> Path | None:
    """Train and eval loss against step, from ``log.jsonl``, as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log_path) if Path(log_path).exists() else []
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not train and not evals:
        return None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=False), label="train loss", lw=1.2)
    if evals:
        ax.plot(*zip(*evals, strict=False), "o-", label="validation loss", lw=1.2, ms=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return Path(png_path)



# ---- the model given back ------------------------------------------------------------------------
def restore_forward(model: nn.Module) -> None:
    """Undo ``accelerator.prepare``'s mixed-precision wrapper of ``model.forward`` (an autocast + fp32-outputs
    function set on the instance, the original kept in ``_original_forward``): a model handed to ``train()`` comes
    back computing in the precision it had, and the next run on the same object gets its own precision."""
    original = vars(model).pop("_original_forward", None)
    if original is None:
        return
    if getattr(original, "__func__", None) is type(model).forward and getattr(original, "__self__", None) is model:
        vars(model).pop("forward", None)  # the class's forward again
    else:
        model.forward = original  # a forward the caller had set on the instance


# ---- LoRA ----------------------------------------------------------------------------------------
def attach_lora(model: nn.Module, r: int = 8, alpha: int = 16, dropout: float = 0.0,
                target_modules: str | Sequence[str] = LORA_TARGET_MODULES, task_type: str = "CAUSAL_LM",
                modules_to_save: Sequence[str] | None = None, verbose: bool = True):
    """Wrap ``model`` with PEFT LoRA adapters (``target_modules``: names or a comma-separated string); only the
    adapters (and ``modules_to_save``, e.g. a fresh classification head) train."""
    from peft import LoraConfig

    if isinstance(target_modules, str):
        target_modules = [m.strip() for m in target_modules.split(",") if m.strip()]
    lora = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                      task_type=task_type, modules_to_save=list(modules_to_save) if modules_to_save else None)
    model = attach_lora_config(model, lora)
    if verbose:
        model.print_trainable_parameters()
    return model


def is_peft_model(model: nn.Module) -> bool:
    return hasattr(model, "merge_and_unload") and hasattr(model, "peft_config")


def _plain_class(model: nn.Module) -> type:
    """The model's own class: FSDP2's ``FSDP<Name>`` subclass (``fully_shard``) peeled off."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch without distributed support
        return type(model)
    cls = type(model)
    if issubclass(cls, FSDPModule):
        return next(base for base in cls.__bases__ if base is not FSDPModule)
    return cls


def _plain_peft_copy(model: nn.Module, state_dict: dict | None):
    """A copy of the PEFT ``model`` on the CPU holding ``state_dict`` (default: the model's own; under FSDP the
    gathered full weights, since the model's own are shards) as plain tensors: the same base class and config, the
    same adapters. Merging the copy leaves the model that was trained as it was."""
    import copy

    base = model.get_base_model()
    fresh = _plain_class(base)(copy.deepcopy(base.config))  # random weights, all overwritten below
    adapter = model.active_adapter
    plain = attach_lora_config(fresh, copy.deepcopy(model.peft_config[adapter]))
    plain.load_state_dict(model.state_dict() if state_dict is None else state_dict, strict=True)
    return plain.eval()


def attach_lora_config(model: nn.Module, config):
    """``get_peft_model`` with a ready ``LoraConfig`` (the one place adapters are attached)."""
    from peft import get_peft_model

    return get_peft_model(model, config)


@contextlib.contextmanager
def _own_class(model: nn.Module):
    """FSDP2 (``fully_shard``) swaps a module's class for a subclass ``FSDP<Name>`` defined in torch; save_pretrained
    reads the class for ``config.auto_map`` and the code files it copies next to the weights (torch's, then). Saving
    under the model's own class keeps the folder a plain model folder."""
    cls = type(model)
    if _plain_class(model) is cls:
        yield model
        return
    model.__class__ = _plain_class(model)
    try:
        yield model
    finally:
        model.__class__ = cls


def _share_tied(model: nn.Module, state_dict: dict | None) -> dict | None:
    """A gathered state dict (FSDP) holds tied weights (the LM head and the token embedding) as separate copies;
    save_pretrained recognises ties by shared storage, so make the names the model ties share one tensor again."""
    if state_dict is None:
        return None
    state_dict, first = dict(state_dict), {}
    for name, param in model.named_parameters(remove_duplicate=False):
        owner = first.setdefault(id(param), name)
        if owner != name and owner in state_dict and name in state_dict:
            state_dict[name] = state_dict[owner]
    return state_dict


def save_model_folder(model: nn.Module, directory: str | os.PathLike, tokenizer=None, state_dict=None) -> nn.Module:
    """``save_pretrained`` (safetensors) of ``model`` and ``tokenizer`` into ``directory``. A PEFT model is saved
    as its adapter in ``directory/lora_adapter/`` and then merged, so the folder itself is a plain model that
    ``from_pretrained`` and ``pipeline`` load; the merge is done on a copy, the model keeps its adapters.
    ``state_dict``: the full weights where the model's own are shards (FSDP: ``accelerator.get_state_dict``).
    Returns the model that was saved (the merged copy for PEFT)."""
    directory = Path(directory)
    if is_peft_model(model):
        model = _plain_peft_copy(model, state_dict)
        model.save_pretrained(directory / LORA_ADAPTER_DIR)
        model, state_dict = model.merge_and_unload(), None
    with _own_class(model):
        model.save_pretrained(directory, state_dict=_share_tied(model, state_dict), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return model


__all__ = ["LOG_FILE", "METRICS_FILE", "LORA_ADAPTER_DIR", "LORA_TARGET_MODULES", "write_metrics", "read_log",
           "plot_loss_curve", "attach_lora", "is_peft_model", "save_model_folder",
           "restore_forward"]
