"""Sharing on the Hugging Face Hub: ``card.py`` (the model card: a ``cards/*.md`` template, package data, filled with
the run's real config and metrics) and ``push.py`` (the upload folder, validation by loading it back, the upload)."""

from .push import (
    PushConfig,
    check_repo_id,
    prepare_upload_folder,
    push_to_hub,
    run_push,
    validate_upload_folder,
)

__all__ = ["PushConfig", "check_repo_id", "prepare_upload_folder", "push_to_hub", "run_push", "validate_upload_folder"]
