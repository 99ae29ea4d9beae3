"""Sharing on the Hugging Face Hub: ``push.py`` (upload folder, model card from ``cards/*.md`` filled with the run's
real metrics, validation by loading it back, upload) and the card templates as package data."""

from .push import (
    PushConfig,
    check_repo_id,
    prepare_upload_folder,
    push_to_hub,
    run_push,
    validate_upload_folder,
)

__all__ = ["PushConfig", "check_repo_id", "prepare_upload_folder", "push_to_hub", "run_push", "validate_upload_folder"]
