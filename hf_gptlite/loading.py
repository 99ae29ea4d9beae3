"""Model folders and Hub ids as the tasks read them: one check of a ``save_pretrained`` folder, one check that a
name is a local path or a reachable Hub id, one loader of a pretrained causal LM (a GPTLite folder or Hub id, or
GPT-2 weights converted to GPTLite) with its tokenizer. Each check raises a ``hf_gptlite.errors.UserError`` that
names the bad path and says what to do, before anything heavy is loaded."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from .errors import InputValueError, MissingInputError, ServerUnreachableError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")
PRETRAINED_HINT = "train one with `gptlite-main` (it writes runs/pretrain_pt) or pass --model_name_or_path"
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


class ModelFolderError(MissingInputError):
    """A model folder that is missing, or lacks what ``from_pretrained`` needs (a ``FileNotFoundError``)."""


# ---- a name: a local path or a Hub id ----------------------------------------------------------------------
def is_hub_id(name: str) -> bool:
    """``name`` is a syntactically valid Hub repository id (``name`` or ``namespace/name``), not a path."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not name or name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def hub_unreachable_reason(endpoint: str | None = None, timeout: float = 5.0) -> str | None:
    """Why the Hub at ``endpoint`` (default ``HF_ENDPOINT``) cannot be reached, from one TCP connection attempt
    (a download would retry for a minute first); None when it answers, or behind a proxy (not checked)."""
    from huggingface_hub import constants

    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return None
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    url = urlparse(endpoint or constants.ENDPOINT)
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except (OSError, ValueError) as err:
        return getattr(err, "strerror", None) or str(err) or type(err).__name__
    return None


def check_hub_reachable(name: str, what: str = "model", hint: str = "", repo_type: str = "model") -> None:
    """Raise :class:`ServerUnreachableError` when the Hub that would serve the Hub id ``name`` (``HF_ENDPOINT``)
    cannot be reached. Skipped in offline mode (the cache answers) and for a model already in the cache."""
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE:
        return
    if repo_type == "model" and isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    reason = hub_unreachable_reason()
    if reason:
        endpoint = constants.ENDPOINT
        cached = " (if it is in your Hub cache, set HF_HUB_OFFLINE=1)" if repo_type != "model" else ""
        raise ServerUnreachableError(
            f"{what} {name!r} is not an existing {'folder' if what == 'model' else 'path'}, and the Hub at {endpoint} "
            f"(HF_ENDPOINT) that would serve it as a Hub id cannot be reached: {reason}{cached}{_hint(hint)}"
        )


def _hint(hint: str) -> str:
    return f"; {hint}" if hint else ""


def resolve_source(name_or_path: str | os.PathLike, what: str = "model", hint: str = "",
                   repo_type: str = "model") -> tuple[str, str]:
    """``("local", path)`` for an existing path, ``("hub", id)`` for a valid Hub id whose Hub can be reached;
    otherwise a :class:`MissingInputError` that says the name is neither (never huggingface_hub's "Repo id must
    use alphanumeric chars" for a mistyped path)."""
    name = str(name_or_path)
    if Path(name).expanduser().exists():
        return "local", str(Path(name).expanduser())
    if not is_hub_id(name):
        raise MissingInputError(f"{what} {name!r} is neither an existing {'folder' if what == 'model' else 'path'} "
                                f"nor a valid Hub id (like 'user/name'){_hint(hint)}")
    check_hub_reachable(name, what, hint, repo_type)
    return "hub", name


def _read_config(model_dir: Path, hint: str = "") -> dict:
    path = model_dir / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputValueError(f"{path} is not valid JSON: {err}{hint}") from err
    if not isinstance(config, dict):
        raise InputValueError(f"{path} is not a JSON object{hint}")
    return config


def check_model_dir(model_dir: str | os.PathLike, model_type: str | None = "gptlite", hint: str = "") -> Path:
    """A ``save_pretrained`` folder with config.json (of ``model_type``, unless None), safetensors weights and a
    tokenizer; otherwise an error that names what is missing (and ``hint``: how to make one)."""
    model_dir = Path(model_dir)
    hint = _hint(hint)
    if not model_dir.is_dir():
        raise ModelFolderError(f"model folder {str(model_dir)!r} does not exist or is not a folder{hint}")
    if not (model_dir / "config.json").is_file():
        peft = " (it looks like a PEFT adapter: merge_and_unload() then save_pretrained first)" if (
            model_dir / "adapter_config.json").is_file() else ""
        raise ModelFolderError(f"no config.json in model folder {str(model_dir)!r}{peft}{hint}")
    config = _read_config(model_dir, hint)
    if model_type is not None and config.get("model_type") != model_type:
        raise InputValueError(f"{model_dir / 'config.json'} has model_type={config.get('model_type')!r}, "
                              f"expected {model_type!r}{hint}")
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


def check_model_source(name_or_path: str | os.PathLike, hint: str = "") -> str:
    """Check that ``name_or_path`` is a model a task can start from, before loading anything: a GPTLite
    ``save_pretrained`` folder (config, safetensors weights, tokenizer), a GPT-2 folder (weights and tokenizer
    files), or a Hub id whose Hub can be reached. Returns ``"local"`` or ``"hub"``."""
    kind, source = resolve_source(name_or_path, "model", hint)
    if kind == "hub":
        return kind
    folder = Path(source)
    if not folder.is_dir():
        raise ModelFolderError(f"model {str(name_or_path)!r} is a file, not a model folder{_hint(hint)}")
    if not (folder / "config.json").is_file():
        check_model_dir(folder, model_type=None, hint=hint)  # raises, naming what is missing
    model_type = _read_config(folder, _hint(hint)).get("model_type")
    if model_type not in ("gptlite", "gpt2"):
        raise InputValueError(f"{folder / 'config.json'} has model_type={model_type!r}: not a GPTLite or GPT-2 "
                              f"model{_hint(hint)}")
    if model_type == "gptlite":
        check_model_dir(folder, hint=hint)
    else:
        weights = [p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".bin")]
        if not weights:
            raise ModelFolderError(f"no weights (model.safetensors or pytorch_model.bin) in GPT-2 folder "
                                   f"{str(folder)!r}{_hint(hint)}")
        if not (folder / "tokenizer.json").is_file() and not all((folder / f).is_file()
                                                                 for f in ("vocab.json", "merges.txt")):
            raise ModelFolderError(f"no tokenizer (tokenizer.json, or vocab.json + merges.txt) in GPT-2 folder "
                                   f"{str(folder)!r}{_hint(hint)}")
    return kind


def check_tokenizer_source(name_or_path: str | os.PathLike, hint: str = "") -> str:
    """A saved tokenizer folder (one of :data:`TOKENIZER_FILES`) or a Hub id whose Hub answers; ``"local"`` or
    ``"hub"``."""
    kind, source = resolve_source(name_or_path, "tokenizer", hint)
    if kind == "local":
        folder = Path(source)
        if not folder.is_dir():
            raise MissingInputError(f"tokenizer {source!r} is a file: pass the folder that "
                                    f"tokenizer.save_pretrained wrote{_hint(hint)}")
        if not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise MissingInputError(f"no tokenizer files ({', '.join(TOKENIZER_FILES)}) in {source!r}{_hint(hint)}")
    return kind


def check_resume_checkpoint(spec: str | None, output_dir: str | os.PathLike, model) -> Path | None:
    """Check ``--resume_from_checkpoint`` (``latest`` or a ``checkpoints/step_N`` folder) against the model the job
    built, before the training loop writes anything: a missing checkpoint, or one of another shape, is a user
    error naming both shapes. Returns the checkpoint folder (None without ``spec``)."""
    if not spec:
        return None
    from .errors import as_user_error
    from .training.checkpoints import check_checkpoint_matches, resolve_checkpoint

    with as_user_error(ValueError, FileNotFoundError, context="--resume_from_checkpoint"):
        path = resolve_checkpoint(spec, output_dir)
        check_checkpoint_matches(path, model)
    return path


def load_model_config(name_or_path: str | os.PathLike, hint: str = "", **hub_kwargs):
    """``AutoConfig`` of a local folder or a Hub id (checked by :func:`check_model_source` first), with an error
    that says which it is not."""
    from transformers import AutoConfig

    import hf_gptlite  # noqa: F401  (registers the Auto classes)

    source = str(name_or_path)
    kind = check_model_source(source, hint)
    try:
        return AutoConfig.from_pretrained(source, **hub_kwargs)
    except OSError as e:
        if kind == "local":
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MissingInputError(f"model {source!r} is not a local folder, and loading it as a Hub id failed: "
                                f"{first}{_hint(hint)}") from e


def load_causal_lm(name_or_path: str | os.PathLike, hint: str = "", **kwargs):
    """(model, tokenizer) of a pretrained causal LM: a GPTLite folder or Hub id, or GPT-2 weights
    (``model_type == "gpt2"``) converted to ``GPTLiteForCausalLM`` with GPT-2's tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .modeling_gptlite import GPTLiteForCausalLM
    from .tokenization import load_gpt2_tokenizer

    config = load_model_config(name_or_path, hint)
    if config.model_type == "gpt2":
        return GPTLiteForCausalLM.from_gpt2(str(name_or_path)), load_gpt2_tokenizer(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(str(name_or_path), **kwargs)
    return model, AutoTokenizer.from_pretrained(str(name_or_path))


__all__ = ["ModelFolderError", "PRETRAINED_HINT", "TOKENIZER_FILES", "check_hub_reachable", "hub_unreachable_reason", "check_model_dir", "check_model_source",
           "check_resume_checkpoint", "check_tokenizer_source", "is_hub_id", "load_causal_lm", "load_model_config", "resolve_source"]
