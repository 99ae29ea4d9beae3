"""Every command line of the package: one YAML-over-flags parser, one error wrapper, one table of commands.

    python -m hf_gptlite COMMAND [--config FILE.yaml] [--key value ...]     (or recipes/COMMAND.py, same flags)
    gptlite-main [flags]                                                    (= python -m hf_gptlite main)

A command is a config dataclass (every field is a flag; ``--help`` lists them) and a function that runs it.
``--config FILE.yaml`` supplies values and flags given on the command line override them.

Exit status: 0 on success (and for ``--help``); 2 for an expected user mistake (``hf_gptlite.errors.UserError``:
a missing, empty or malformed file or folder, a bad flag or YAML value, a name that is neither a folder nor a Hub
id, an unreachable judge or Hub, an output folder in the way), which ends in ONE ``error: ...`` line on stderr
(set ``GPTLITE_DEBUG=1`` or pass ``--debug`` to see the traceback too); any other exception is a bug and keeps
its traceback (exit status 1). Each job checks its inputs before it writes anything, so a refused run leaves
its output folder absent or as it was.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from .errors import InputValueError, MissingInputError, UserError, as_user_error

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
    "export_gguf": ("hf_gptlite.export.gguf:GGUFExportConfig", "hf_gptlite.export.gguf:run_export_gguf"),
    "export": ("hf_gptlite.export.command:ExportConfig", "hf_gptlite.export.command:run_export"),
}
DEBUG_ENV = "GPTLITE_DEBUG"


def _load(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def one_line_errors(parser: argparse.ArgumentParser, prog: str | None = None) -> argparse.ArgumentParser:
    """Make ``parser`` raise :class:`InputValueError` for a usage mistake (a bad or missing flag value) instead
    of printing its usage block and exiting, so the error wrapper reports it in one line. ``--help`` still
    prints the help and exits 0."""
    def error(message: str):
        raise InputValueError(f"{message}; see {prog or parser.prog} --help")

    parser.error = error  # argparse calls self.error(...) for every usage mistake
    return parser


def _yaml_value(action: argparse.Action, key: str, value, where: str):
    """A YAML value checked and converted as the flag ``--key`` would convert its text (one value, or a list
    for a list flag; ``null`` keeps None)."""
    if value is None:
        return None
    many = action.nargs in ("+", "*")
    if isinstance(value, dict) or (isinstance(value, list) and not many):
        raise InputValueError(f"{where}: {key} takes a single value, got {value!r}")
    items = value if isinstance(value, list) else [value]
    converted = []
    for item in items:
        if isinstance(item, (list, dict)):
            raise InputValueError(f"{where}: {key} takes a list of single values, got {value!r}")
        if action.type is not None:
            try:  # bools go through as they are (string_to_bool takes them); the rest as the text of a flag
                item = action.type(item if isinstance(item, bool) else str(item))
            except (ValueError, TypeError, argparse.ArgumentTypeError) as err:
                kind = getattr(action.type, "__name__", "value")
                raise InputValueError(f"{where}: {key}: invalid {kind} value {item!r}") from err
        if action.choices is not None and item not in action.choices:
            raise InputValueError(f"{where}: {key}: {item!r} is not one of {list(action.choices)}")
        converted.append(item)
    return converted if many else converted[0]


def _did_you_mean(name: str, names) -> str:
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def read_yaml_config(path: str | os.PathLike) -> dict:
    """The mapping of a ``--config`` YAML file, with an error that names the file for every way it can be bad."""
    import yaml

    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise MissingInputError(f"config file {str(path)!r} {what}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise InputValueError(f"config file {path} is not UTF-8 text (byte {err.start})") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise InputValueError(f"config file {path} is not valid YAML: {problem}{where}") from err
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise InputValueError(f"{path}: expected a mapping of config keys to values, got a {type(values).__name__}")
    return values


def parse_config(config_class, args: list[str] | None = None, prog: str | None = None):
    """Parse ``config_class`` (a dataclass) from the command line with ``HfArgumentParser``;
    ``--config FILE.yaml`` supplies values and any ``--key value`` flag overrides them.

    Every mistake raises :class:`InputValueError` / :class:`MissingInputError` naming the bad flag, key or file:
    an unknown flag or YAML key (with the closest valid name), a value of the wrong type, a missing or malformed
    YAML file, a value the config dataclass's ``__post_init__`` refuses. ``--help`` prints the flags and exits 0.
    """
    from transformers import HfArgumentParser

    args = list(sys.argv[1:] if args is None else args)
    pre = one_line_errors(argparse.ArgumentParser(add_help=False, prog=prog), prog)
    pre.add_argument("--config")
    known, rest = pre.parse_known_args(args)
    parser = one_line_errors(HfArgumentParser(config_class, prog=prog), prog)
    parser.add_argument("--config", help="YAML file of config values; command-line flags override them")
    names = {f.name for f in dataclasses.fields(config_class)}
    if known.config:
        values = read_yaml_config(known.config)
        unknown = sorted(set(values) - names)
        if unknown:
            raise InputValueError(f"{known.config}: unknown config key {unknown[0]!r}{_did_you_mean(unknown[0], names)}"
                                  + (f" (and {unknown[1:]})" if len(unknown) > 1 else ""))
        for key, value in values.items():
            values[key] = _yaml_value(parser._option_string_actions[f"--{key}"], key, value, known.config)
        parser.set_defaults(**values)
        for action in parser._actions:  # a value from the YAML satisfies a required flag
            if action.dest in values:
                action.required = False
    with as_user_error(ValueError):  # the config dataclass's __post_init__ refusing a value
        config, _, remaining = parser.parse_args_into_dataclasses(args=rest, return_remaining_strings=True,
                                                                  look_for_args_file=False)
    if remaining:
        flags = [a for a in remaining if a.startswith("-")]
        if flags:
            flag = flags[0].split("=", 1)[0]
            hint = _did_you_mean(flag, [f"--{n}" for n in names])
            raise InputValueError(f"unknown flag {flag}{hint}; see {prog or parser.prog} --help")
        raise InputValueError(f"unexpected argument(s) {remaining}; see {prog or parser.prog} --help")
    return config


def is_user_error(exc: BaseException) -> bool:
    """Does ``exc`` mean the user asked for something that cannot be done (see ``hf_gptlite.errors``), as opposed
    to a bug? A :class:`UserError`, or the loop's ``TrainingDivergedError`` (the loss became NaN: its message
    says which setting to lower)."""
    if isinstance(exc, UserError):
        return True
    loop = sys.modules.get("hf_gptlite.training.loop")  # not loaded: the exception cannot be one of its classes
    return loop is not None and isinstance(exc, loop.TrainingDivergedError)


def run_entry_point(fn: Callable[[list[str]], object], argv: list[str] | None = None) -> int:
    """Call ``fn(argv)``: the one error wrapper of every command line. Returns the exit status: 0 on success
    (and for ``--help``), 130 for Ctrl-C, 2 for a user error, printed as one ``error: ...`` line on stderr (with the traceback
    before it under ``--debug`` / ``GPTLITE_DEBUG=1``). Any other exception is a bug and propagates with its
    traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0") or "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        fn(argv)
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's status for SIGINT, not a traceback
        sys.stdout.flush()
        print("\ninterrupted (Ctrl-C); checkpoints already written are complete (they are written atomically)",
              file=sys.stderr, flush=True)
        return 130
    except SystemExit as e:  # argparse's --help (0); anything else that chose its own exit status
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except Exception as e:
        if not is_user_error(e):
            raise
        if debug:
            traceback.print_exc()
        message = " ".join(str(e).split()) or type(e).__name__
        sys.stdout.flush()
        print(f"error: {message}", file=sys.stderr, flush=True)
        return 2
    return 0


def run_command(command: str, argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse the flags of ``command`` and run it behind the error wrapper; returns the exit status
    (``sys.exit(run_command("pretrain"))`` is a whole recipe)."""
    if command not in COMMANDS:
        raise KeyError(f"unknown command {command!r}; commands: {', '.join(COMMANDS)}")
    config_spec, run_spec = COMMANDS[command]
    return run_entry_point(lambda args: _load(run_spec)(parse_config(_load(config_spec), args, prog)), argv)


USAGE = "usage: python -m hf_gptlite COMMAND [--help] [--debug] [--config FILE.yaml] [--flag value ...]"


def main(argv: list[str] | None = None) -> int:
    """``python -m hf_gptlite COMMAND [flags]``; ``--help`` alone lists the commands."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = ["--debug"] if "--debug" in argv else []  # before or after the command
    argv = [a for a in argv if a != "--debug"]
    if argv and argv[0] in ("-h", "--help"):
        print(f"{USAGE}\ncommands: {', '.join(COMMANDS)}\n`python -m hf_gptlite COMMAND --help` lists its flags; "
              f"a user mistake ends in one `error: ...` line and exit status 2 (--debug or {DEBUG_ENV}=1: traceback)")
        return 0
    if not argv or argv[0] not in COMMANDS:
        given = f"unknown command {argv[0]!r}{_did_you_mean(argv[0], COMMANDS)}" if argv else "no command given"
        print(f"error: {given}; usage: python -m hf_gptlite COMMAND [flags], COMMAND one of {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    return run_command(argv[0], argv[1:] + debug, prog=f"python -m hf_gptlite {argv[0]}")


def main_job(argv: list[str] | None = None) -> int:
    """The ``gptlite-main`` console script: the main job (tokenizer + pretraining + evaluation + sample);
    returns the exit status (the console script exits with it)."""
    return run_command("main", argv, prog="gptlite-main")


__all__ = ["COMMANDS", "DEBUG_ENV", "is_user_error", "main", "main_job", "one_line_errors", "parse_config",
           "read_yaml_config", "run_command", "run_entry_point"]
