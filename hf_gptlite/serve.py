"""``python -m hf_gptlite.serve [ARGS]``: ``transformers serve`` that can load GPTLite folders.

``transformers serve`` (5.24) looks the model class up by name on the ``transformers`` module
(``getattr(transformers, config.architectures[0])``), so a model registered through the Auto classes, or loaded
with ``trust_remote_code``, is not found. This entry point puts the GPTLite classes on that module and then
runs the unchanged ``transformers serve`` command line (same arguments, same OpenAI-compatible endpoints)::

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


def serve(argv: list[str]) -> None:
    """Parse ``transformers serve``'s own flags, check the model named on the command line (a folder or Hub id),
    then serve until interrupted."""
    for cls in (GPTLiteModel, GPTLiteForCausalLM, GPTLiteForSequenceClassification):
        setattr(transformers, cls.__name__, cls)
    import typer
    from transformers.cli.serve import Serve

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
