"""Pretraining, one folder: ``config`` (PretrainConfig) -> ``data`` (documents, packed blocks) -> ``run`` (the job,
the main job) with ``metrics`` (perplexity, bits per character) as the loop's metric function."""

from .config import PretrainConfig, build_model_config
from .run import run_main_job, run_pretraining

__all__ = ["PretrainConfig", "build_model_config", "run_pretraining", "run_main_job"]
