"""Every command line of the package: one YAML-over-flags parser, one error wrapper, one table of commands.

    python -m hf_gptlite COMMAND [--config FILE.yaml] [--key value ...]     (or recipes/COMMAND.py, same flags)
    gptlite-main [flags]                                                    (= python -m hf_gptlite main)

A command is a config dataclass (every field is a flag; ``--help`` lists them) and a function that runs it.
``--config FILE.yaml`` supplies values and flags given on the command line override them. An expected user
mistake (a missing file, a bad value) ends in one ``error: ...`` line on stderr and exit status 2; set
``GPTLITE_DEBUG=1`` (or pass ``--debug``) to see the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

# command -> ("module:ConfigClass", "module:run_function"); modules are imported only when the command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "main": ("hf_gptlite.pretrain.config:PretrainConfig", "hf_gptlite.pretrain.run:run_main_job"),
    "pretrain": ("hf_gptlite.pretrain.config:PretrainConfig", "hf_gptlite.pretrain.run:run_pretraining"),
    "train_tokenizer": ("hf_gptlite.tokenization:TokenizerConfig", "hf_gptlite.tokenization:run_train_tokenizer"),
    "finetune_spam": ("hf_gptlite.spam.config:SpamConfig", "hf_gptlite.spam.run:run_spam_finetune"),
    "finetune_instruct": ("hf_gptlite.instruct.finetune:FinetuneInstructConfig",
                          "hf_gptlite.instruct.finetune:run_finetune_instruct"),
    "evaluate_instruct": ("hf_gptlite.instruct.evaluate:EvaluateInstructConfig",
                          "hf_gptlite.instruct.evaluate:run_evaluate_instruct"),
    "chat": ("hf_gptlite.instruct.chat:ChatConfig", "hf_gptlite.instruct.chat:run_chat"),
    "push_to_hub": ("hf_gptlite.hub.push:PushConfig", "hf_gptlite.hub.push:run_push"),
}
DEBUG_ENV = "GPTLITE_DEBUG"


def _load(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def parse_config(config_class, args: list[str] | None = None):
    """Parse ``config_class`` (a dataclass) from the command line with ``HfArgumentParser``;
    ``--config FILE.yaml`` supplies values and any ``--key value`` flag overrides them."""
    import yaml
    from transformers import HfArgumentParser

    args = list(sys.argv[1:] if args is None else args)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, rest = pre.parse_known_args(args)
    parser = HfArgumentParser(config_class)
    parser.add_argument("--config", help="YAML file of config values; command-line flags override them")
    if known.config:
        path = Path(known.config)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of config keys to values")
        names = {f.name for f in dataclasses.fields(config_class)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{path}: unknown config keys {unknown} (valid keys: {sorted(names)})")
        for key, value in values.items():
            action = parser._option_string_actions[f"--{key}"]
            if isinstance(value, str) and action.type not in (None, str):  # YAML reads "1e-3" as a string
                values[key] = action.type(value)
        parser.set_defaults(**values)
        for action in parser._actions:  # a value from the YAML satisfies a required flag
            if action.dest in values:
                action.required = False
    return parser.parse_args_into_dataclasses(args=rest)[0]  # [1]: the namespace holding --config


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the user asked for something that cannot be done (bad value, missing file, server
    down), as opposed to a bug: they end in one ``error:`` line."""
    from .instruct.judge import JudgeRequestError

    return ValueError, TypeError, OSError, JudgeRequestError


def run_entry_point(fn: Callable[[list[str]], object], argv: list[str] | None = None) -> int:
    """Call ``fn(argv)``; an expected user error becomes one ``error:`` line on stderr and exit status 2.
    Returns the exit status (0 on success)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0") or "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        fn(argv)
    except user_errors() as e:
        if debug:
            traceback.print_exc()
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


def run_command(command: str, argv: list[str] | None = None) -> int:
    """Parse the flags of ``command`` and run it behind the error wrapper; returns the exit status."""
    config_spec, run_spec = COMMANDS[command]
    return run_entry_point(lambda args: _load(run_spec)(parse_config(_load(config_spec), args)), argv)


def main(argv: list[str] | None = None) -> int:
    """``python -m hf_gptlite COMMAND [flags]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        names = ", ".join(COMMANDS)
        print(f"usage: python -m hf_gptlite COMMAND [--help] [flags]\ncommands: {names}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return run_command(argv[0], argv[1:])


def main_job() -> int:
    """The ``gptlite-main`` console script: the main job (tokenizer + pretraining + evaluation + sample)."""
    return run_command("main")


__all__ = ["COMMANDS", "parse_config", "run_entry_point", "run_command", "main", "main_job"]
