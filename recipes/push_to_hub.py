"""Publish a trained GPTLite folder to the Hugging Face Hub (or write the exact upload folder with --dry_run).

    python recipes/push_to_hub.py --model_dir runs/pretrain --repo_id user/gptlite-pt [--private]
        [--revision BRANCH] [--commit_message "..."] [--dry_run OUT_DIR] [--config push.yaml]

The token comes from HF_TOKEN or `hf auth login` (resolved by huggingface_hub, never printed);
HF_ENDPOINT points the client at another Hub.
"""

import json
import logging
import sys
from dataclasses import dataclass, field

from hf_gptlite.hub import push_to_hub
from hf_gptlite.training import parse_config as parse_recipe_config


@dataclass
class PushConfig:
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


def parse_config(argv: list[str]) -> PushConfig:
    """CLI flags, with `--config file.yaml` supplying defaults that flags override (the recipes' shared parser)."""
    return parse_recipe_config(PushConfig, argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = parse_config(sys.argv[1:] if argv is None else argv)
    result = push_to_hub(
        cfg.model_dir, cfg.repo_id, private=cfg.private, revision=cfg.revision, commit_message=cfg.commit_message,
        dry_run=cfg.dry_run, max_shard_size=cfg.max_shard_size, license=cfg.license, language=cfg.language,
        datasets=cfg.datasets,
    )
    if cfg.dry_run:
        print(f"dry run: wrote {cfg.dry_run} and loaded it back: {json.dumps(result)}")
    else:
        print(f"pushed {cfg.model_dir} to {cfg.repo_id}: {result.commit_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
