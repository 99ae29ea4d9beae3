"""Publish a trained GPTLite folder to the Hugging Face Hub (or write the exact upload folder with --dry_run).

    python recipes/push_to_hub.py --model_dir runs/pretrain --repo_id user/gptlite-pt [--private]
        [--revision BRANCH] [--commit_message "..."] [--dry_run OUT_DIR] [--config push.yaml]

The token comes from HF_TOKEN or `hf auth login` (resolved by huggingface_hub, never printed);
HF_ENDPOINT points the client at another Hub.
"""

import sys

from hf_gptlite.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("push_to_hub"))
