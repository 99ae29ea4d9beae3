"""``python -m hf_gptlite.serve [ARGS]``: ``transformers serve`` that can load GPTLite folders.

``transformers serve`` looks the model class up by name on the ``transformers`` module
(``getattr(transformers, config.architectures[0])``), so a model registered through the Auto classes, or loaded
with ``trust_remote_code``, is not found. Since transformers 5.25 that lookup runs in a separate process, started
with ``multiprocessing.get_context("spawn")``, which inherits nothing of the server's module state. So the
registration travels with the object transformers hands that process: the server's ``ModelLoader`` (pickled into
every process that loads a model, API-server processes included) is :class:`GPTLiteModelLoader`, defined here;
unpickling it imports this module, and importing this module registers the GPTLite classes (the Auto classes,
through ``import hf_gptlite``, and the name ``transformers serve`` looks up). No process layout is assumed: the same
import runs in the server, in a spawned model process, and in transformers 5.24's in-process loading.

Then it runs the unchanged ``transformers serve`` command line (same arguments, same OpenAI-compatible endpoints)::

    python -m hf_gptlite.serve runs/instruct --host 127.0.0.1 --port 8000
    transformers chat runs/instruct http://127.0.0.1:8000    # or any OpenAI client

A GPT-2 export (``GPTLiteForCausalLM.to_gpt2()`` saved with the tokenizer) needs no help: plain
``transformers serve`` loads it.

Like every entry point of the package it runs behind ``cli.run_entry_point``: a bad flag or a model that is neither
a folder nor a Hub id is one ``error:`` line (exit status 2) before the server starts; Ctrl-C stops it with exit
status 0.
"""

import sys
from pathlib import Path

import transformers

from . import GPTLiteForCausalLM, GPTLiteForSequenceClassification, GPTLiteModel
from .cli import run_entry_point
from .errors import InputValueError
from .loading import check_model_source

PROG = "python -m hf_gptlite.serve"
SERVED_CLASSES = (GPTLiteModel, GPTLiteForCausalLM, GPTLiteForSequenceClassification)


def register_with_transformers_serve() -> None:
    """Make ``getattr(transformers, "GPTLiteForCausalLM")`` (how ``transformers serve`` resolves a config's
    architecture) find the GPTLite classes in this process. transformers can hold more than one ``transformers``
    module object (``processing_utils`` re-imports the package and replaces ``sys.modules["transformers"]``), so the
    classes go on each: the one imported here, the current one, and the one the serving code looks names up on."""
    modules = [transformers, sys.modules.get("transformers")]
    if _model_manager is not None:
        modules.append(getattr(_model_manager, "transformers", None))
    for module in {id(m): m for m in modules if m is not None}.values():
        for cls in SERVED_CLASSES:
            setattr(module, cls.__name__, cls)


def _serving_modules():
    """transformers' serving modules; a one-line error when its serving extra is not installed."""
    try:
        import typer
        from transformers.cli.serve import Serve
        from transformers.cli.serving import model_manager
    except ImportError as e:
        raise InputValueError(f"transformers serve cannot start ({e}); install its extra: "
                              "pip install 'hf_gptlite[serving]'") from None
    return typer, Serve, model_manager


try:  # transformers >= 5.25 loads each model in a spawned process with a pickled ModelLoader
    from transformers.cli.serving import model_manager as _model_manager
except ImportError:  # no serving extra: `serve` says so in one line
    _model_manager = None
_ModelLoader = getattr(_model_manager, "ModelLoader", None)  # None on 5.24, which loads in the server's process

register_with_transformers_serve()  # at import: in the server and in every process that unpickles the loader

if _ModelLoader is not None:

    class GPTLiteModelLoader(_ModelLoader):
        """transformers' own ``ModelLoader``, unchanged, under a class name of this module: a process that unpickles
        it imports ``hf_gptlite.serve`` first, which registers the GPTLite classes there."""

        def __setstate__(self, state: dict) -> None:
            self.__dict__.update(state)
            register_with_transformers_serve()  # once every import of the unpickling process has run


def _use_gptlite_loader(model_manager) -> None:
    """Have ``Serve`` build :class:`GPTLiteModelLoader` (it imports ``ModelLoader`` from ``model_manager`` when it
    starts); transformers 5.24, which has no loader and loads in this process, needs nothing."""
    if _ModelLoader is not None:
        model_manager.ModelLoader = GPTLiteModelLoader


def serve(argv: list[str]) -> None:
    """Parse ``transformers serve``'s own flags, check the model named on the command line (a folder or Hub id),
    then serve until interrupted."""
    typer, Serve, model_manager = _serving_modules()
    _use_gptlite_loader(model_manager)

    try:  # typer >= 0.25 carries its own copy of click
        from typer._click.exceptions import ClickException
    except ImportError:
        from click.exceptions import ClickException

    app = typer.Typer(add_completion=False)
    app.command()(Serve)  # the only command, so it runs without a sub-command name
    command = typer.main.get_command(app)
    try:
        ctx = command.make_context(PROG, list(argv))
    except typer.Exit as e:  # --help
        raise SystemExit(e.exit_code) from None
    except ClickException as e:  # an unknown flag, a bad value: one line, not click's usage box
        raise InputValueError(f"{e.format_message()}; see {PROG} --help") from None
    model = ctx.params.get("force_model")
    if model:  # a folder, or a Hub id with an optional @revision
        name = model if Path(model).exists() else model.split("@", 1)[0]
        check_model_source(name, "serve a save_pretrained folder (e.g. runs/instruct) or a Hub id")
    try:
        with ctx:
            command.invoke(ctx)
    except KeyboardInterrupt:  # Ctrl-C is how a server is stopped: uvicorn has shut down cleanly, exit 0
        print("server stopped", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """``python -m hf_gptlite.serve``; returns the exit status (0 when the server is stopped, 2 for a user error)."""
    return run_entry_point(serve, argv)


if __name__ == "__main__":
    sys.exit(main())
