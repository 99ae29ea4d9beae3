"""Share a trained GPTLite on the Hugging Face Hub.

    model dir (save_pretrained + metrics.json ...) -> upload folder (safetensors shards, config with auto_map,
    code files, tokenizer, generation config, run files, README.md card) -> validated by loading it back
    with trust_remote_code -> create_repo + upload_folder

The card is built by ``card.py``. The token is resolved by huggingface_hub (``HF_TOKEN``,
``hf auth login``); this module never prints it and checks it was not written into the folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import huggingface_hub
import torch
from huggingface_hub import HfApi
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

import hf_gptlite  # noqa: F401  (registers the Auto classes used to re-save the model)

from ..errors import (
    InputValueError,
    MissingCredentialsError,
    OutputInTheWayError,
    ServerUnreachableError,
    UserError,
)
from ..loading import check_model_dir, hub_unreachable_reason
from .card import CARD_TEMPLATES, MODEL_CARD_DIR, build_model_card, card_kind, eval_results  # noqa: F401  (API)

logger = logging.getLogger(__name__)

RUN_FILES = ("metrics.json", "training_config.json", "loss_curve.png")  # copied as-is when present

class HubUploadError(UserError, RuntimeError):
    """An upload that stopped partway (the Hub refused or went away); re-running the same command completes it."""

PUSH_HINT = "pass the folder a training run wrote (e.g. runs/pretrain_pt)"


# ---------------------------------------------------------------------------------------------- inputs
def check_repo_id(repo_id: str) -> str:
    """``namespace/name`` checked with huggingface_hub's own validator; ``ValueError`` naming the problem."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise InputValueError(f"repo_id must look like 'user/model-name' (one '/'), got {repo_id!r}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise InputValueError(f"invalid repo_id {repo_id!r}: {err}") from err
    return repo_id


def read_json(path: Path) -> dict:
    """A JSON object from `path`, or {} when the file is absent; a clear error when it is not an object."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise InputValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


# ------------------------------------------------------------------------------------- upload folder
def _auto_class(config):
    if any(a.endswith("ForSequenceClassification") for a in (config.architectures or [])):
        return AutoModelForSequenceClassification
    return AutoModelForCausalLM


def prepare_upload_folder(
    model_dir: str | Path,
    out_dir: str | Path,
    repo_id: str,
    *,
    max_shard_size: str | int = "2GB",
    license: str = "apache-2.0",
    language: list[str] | None = None,
    datasets: list[str] | None = None,
    template_dir: str | Path | None = None,
) -> Path:
    """Write the exact folder that would be uploaded into `out_dir` (must be absent or empty).

    The model is re-saved with save_pretrained (safetensors, sharded above `max_shard_size`, config with
    auto_map, configuration_gptlite.py + modeling_gptlite.py + gptlite_kernels.py); the tokenizer (and chat template) is re-saved;
    metrics.json / training_config.json / loss_curve.png are copied; README.md is the filled card.
    """
    check_repo_id(repo_id)
    model_dir = check_model_dir(model_dir, hint=PUSH_HINT)
    out_dir = check_upload_folder_target(out_dir)
    metrics = read_json(model_dir / "metrics.json")
    training_config = read_json(model_dir / "training_config.json")

    config = AutoConfig.from_pretrained(model_dir)
    model = _auto_class(config).from_pretrained(model_dir, dtype="auto")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    kind = card_kind(config, tokenizer)

    # Build in a sibling temp folder, move into place at the end: a crash never leaves half a folder.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, max_shard_size=max_shard_size)
        tokenizer.save_pretrained(tmp)
        for name in RUN_FILES:
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, tmp / name)
        files = sorted(p.name for p in tmp.iterdir()) + ["README.md"]
        card = build_model_card(
            kind, repo_id=repo_id, config=model.config, num_parameters=model.num_parameters(), metrics=metrics,
            training_config=training_config, files=files, license=license, language=language, datasets=datasets,
            template_dir=template_dir,
        )
        card.save(tmp / "README.md")
        _check_no_token(tmp)
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("prepared %s (%s card) with %d files", out_dir, kind, len(files))
    return out_dir


def check_upload_folder_target(out_dir: str | Path) -> Path:
    """The folder a dry run writes must be absent or empty (it is never merged into)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        what = "is a file" if not out_dir.is_dir() else "exists and is not empty"
        raise OutputInTheWayError(f"output folder {str(out_dir)!r} {what}; pick a new one")
    for parent in out_dir.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputInTheWayError(f"output folder {str(out_dir)!r} cannot be created: {str(parent)!r} is a file")
            break
    return out_dir


def _check_no_token(folder: Path) -> None:
    """Refuse to upload a folder that contains the user's Hub token anywhere."""
    token = huggingface_hub.get_token()
    if not token:
        return
    needle = token.encode()
    leaks = sorted(  # weights are written from tensors by save_pretrained: skip them
        str(p.relative_to(folder)) for p in folder.rglob("*")
        if p.is_file() and p.suffix != ".safetensors" and needle in p.read_bytes()
    )
    if leaks:
        raise InputValueError(f"{', '.join(leaks)} contain(s) your Hub token; refusing to upload (remove it from the run files)")


# Run in a fresh interpreter: `import hf_gptlite` there would register the package's own classes, and
# transformers prefers registered classes over a folder's code files. Here hf_gptlite cannot be imported.
_LOAD_BACK_SCRIPT = r"""
import importlib.abc, json, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hf_gptlite" or name.startswith("hf_gptlite."):
            raise ImportError("hf_gptlite is blocked: the folder must load with its own code files")
sys.meta_path.insert(0, _Block())
import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
folder, out, text = sys.argv[1:4]
config = AutoConfig.from_pretrained(folder, trust_remote_code=True, local_files_only=True)
seq = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
auto = AutoModelForSequenceClassification if seq else AutoModelForCausalLM
model = auto.from_pretrained(folder, trust_remote_code=True, local_files_only=True).eval()
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True, local_files_only=True)
ids = tokenizer(text, return_tensors="pt").input_ids.clamp_max(config.vocab_size - 1)
with torch.no_grad():
    logits = model(ids).logits
save_file({"input_ids": ids.contiguous(), "logits": logits.contiguous()}, out)
open(out + ".json", "w").write(json.dumps({"model_class": type(model).__module__ + "." + type(model).__name__,
                  "num_parameters": model.num_parameters(), "tokenizer_class": type(tokenizer).__name__,
                  "chat_template": bool(tokenizer.chat_template),
                  "hf_gptlite_imported": any(m.split(".")[0] == "hf_gptlite" for m in sys.modules)}))
"""


def validate_upload_folder(folder: str | Path, reference_dir: str | Path | None = None,
                           text: str = "The quick brown fox") -> dict:
    """Load `folder` back as a user would, without network and without hf_gptlite (fresh subprocess).

    Checks: the model class comes from the folder's own code files, the tokenizer loads, and (given
    `reference_dir`) the logits on `text` equal those of the source model. Returns a summary dict.
    """
    folder = Path(folder).resolve()
    with tempfile.TemporaryDirectory(prefix="gptlite-validate-") as tmp:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(Path(tmp) / "modules"),
               "PYTHONPATH": ""}
        out = Path(tmp) / "logits.safetensors"
        proc = subprocess.run([sys.executable, "-c", _LOAD_BACK_SCRIPT, str(folder), str(out), text],
                              env=env, cwd=tmp, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError(f"{folder} does not load back with trust_remote_code:\n{proc.stderr[-3000:]}")
        summary = json.loads(Path(str(out) + ".json").read_text())
        loaded = load_file(out)
    if summary.pop("hf_gptlite_imported") or summary["model_class"].startswith("hf_gptlite"):
        raise RuntimeError(f"{folder} loaded hf_gptlite's classes instead of its own code files")
    if reference_dir is not None:
        ref_config = AutoConfig.from_pretrained(reference_dir)
        reference = _auto_class(ref_config).from_pretrained(reference_dir, dtype="auto").eval()
        with torch.no_grad():
            ref_logits = reference(loaded["input_ids"]).logits
        if not torch.equal(loaded["logits"], ref_logits):
            diff = (loaded["logits"].float() - ref_logits.float()).abs().max().item()
            raise RuntimeError(f"logits of {folder} differ from {reference_dir} (max abs diff {diff:.3g})")
        summary["logits_equal_to_source"] = True
    return summary


# --------------------------------------------------------------------------------------------- upload
def upload_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
):
    """create_repo(exist_ok) [+ create_branch] + upload_folder. Returns huggingface_hub's CommitInfo.

    `token=None` lets huggingface_hub resolve it (HF_TOKEN, `hf auth login`). Re-running after a failure
    completes the upload: files already on the Hub with the same content are skipped.
    """
    check_repo_id(repo_id)
    if token is None and huggingface_hub.get_token() is None:
        raise MissingCredentialsError("no Hugging Face token found: set HF_TOKEN or run `hf auth login`")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            revision=revision,
            commit_message=commit_message or f"Upload {repo_id.split('/')[-1]} (hf_gptlite)",
        )
    except (huggingface_hub.errors.HfHubHTTPError, OSError, RuntimeError) as err:
        raise HubUploadError(
            f"upload of {folder} to {repo_id} stopped: {err}\n"
            "Re-run the same command to complete it (files already uploaded are not sent again)."
        ) from err


def push_to_hub(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    dry_run: str | Path | None = None,
    max_shard_size: str | int = "2GB",
    license: str = "apache-2.0",
    language: list[str] | None = None,
    datasets: list[str] | None = None,
    endpoint: str | None = None,
):
    """Prepare + validate + upload. With `dry_run=OUT_DIR` write and validate the folder there, upload nothing.

    Returns the validation summary (dry run) or the CommitInfo.
    """
    check_repo_id(repo_id)  # every input checked before the slow part, and before anything is written
    check_model_dir(model_dir, hint=PUSH_HINT)
    read_json(Path(model_dir) / "metrics.json")
    read_json(Path(model_dir) / "training_config.json")
    if dry_run is not None:
        check_upload_folder_target(dry_run)
    else:
        if huggingface_hub.get_token() is None:
            raise MissingCredentialsError("no Hugging Face token found: set HF_TOKEN or run `hf auth login`")
        target = endpoint or huggingface_hub.constants.ENDPOINT
        reason = hub_unreachable_reason(target)
        if reason:
            raise ServerUnreachableError(f"cannot reach the Hub at {target} (HF_ENDPOINT) to push {repo_id}: "
                                         f"{reason}; check the network or HF_ENDPOINT, or use --dry_run FOLDER")
    card_args = dict(max_shard_size=max_shard_size, license=license, language=language, datasets=datasets)
    if dry_run is not None:
        folder = prepare_upload_folder(model_dir, dry_run, repo_id, **card_args)
        return validate_upload_folder(folder, reference_dir=model_dir)
    with tempfile.TemporaryDirectory(prefix="gptlite-push-") as tmp:
        folder = prepare_upload_folder(model_dir, Path(tmp) / "upload", repo_id, **card_args)
        validate_upload_folder(folder, reference_dir=model_dir)
        return upload_folder(folder, repo_id, private=private, revision=revision,
                             commit_message=commit_message, endpoint=endpoint)


# ---------------------------------------------------------------------------------------------- the job
@dataclass
class PushConfig:
    """``recipes/push_to_hub.py`` / ``python -m hf_gptlite push_to_hub``."""

    model_dir: str = field(metadata={"help": "save_pretrained folder of a training run (config.json, model.safetensors, tokenizer, metrics.json ...)"})
    repo_id: str = field(metadata={"help": "Hub repository, 'user/name' or 'org/name'"})
    private: bool = field(default=False, metadata={"help": "create the repository as private (ignored if it exists)"})
    revision: str | None = field(default=None, metadata={"help": "branch to push to (created if missing); default main"})
    commit_message: str | None = field(default=None, metadata={"help": "commit message"})
    dry_run: str | None = field(default=None, metadata={"help": "write the upload folder to this (new) folder, load it back, upload nothing"})
    max_shard_size: str = field(default="2GB", metadata={"help": "safetensors shard size (save_pretrained max_shard_size)"})
    license: str = field(default="apache-2.0", metadata={"help": "license in the model card metadata"})
    language: list[str] | None = field(default=None, metadata={"help": "language codes for the card (default: training_config.json 'language')"})
    datasets: list[str] | None = field(default=None, metadata={"help": "Hub dataset ids for the card (default: training_config.json 'dataset_name')"})


def run_push(cfg: PushConfig):
    """Push (or dry-run) ``cfg.model_dir`` and print where it went; returns push_to_hub's result."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = push_to_hub(
        cfg.model_dir, cfg.repo_id, private=cfg.private, revision=cfg.revision, commit_message=cfg.commit_message,
        dry_run=cfg.dry_run, max_shard_size=cfg.max_shard_size, license=cfg.license, language=cfg.language,
        datasets=cfg.datasets,
    )
    if cfg.dry_run:
        print(f"dry run: wrote {cfg.dry_run} and loaded it back: {json.dumps(result)}")
    else:
        print(f"pushed {cfg.model_dir} to {cfg.repo_id}: {result.commit_url}")
    return result


__all__ = [
    "HubUploadError",
    "PushConfig",
    "run_push",
    "build_model_card",
    "card_kind",
    "check_model_dir",
    "check_repo_id",
    "eval_results",
    "prepare_upload_folder",
    "push_to_hub",
    "upload_folder",
    "validate_upload_folder",
]
