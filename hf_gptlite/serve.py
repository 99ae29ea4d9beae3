"""``python -m hf_gptlite.serve [ARGS]``: ``transformers serve`` that can load GPTLite folders.

``transformers serve`` (5.24) looks the model class up by name on the ``transformers`` module
(``getattr(transformers, config.architectures[0])``), so a model registered through the Auto classes, or loaded
with ``trust_remote_code``, is not found. This entry point puts the GPTLite classes on that module and then
runs the unchanged ``transformers serve`` command line (same arguments, same OpenAI-compatible endpoints)::

    python -m hf_gptlite.serve runs/instruct --host 127.0.0.1 --port 8000
    transformers chat runs/instruct http://127.0.0.1:8000    # or any OpenAI client

A GPT-2 export (``GPTLiteForCausalLM.to_gpt2()`` saved with the tokenizer) needs no help: plain
``transformers serve`` loads it.
"""

import sys

import transformers

from . import GPTLiteForCausalLM, GPTLiteForSequenceClassification, GPTLiteModel


def main(argv: list[str] | None = None) -> None:
    for cls in (GPTLiteModel, GPTLiteForCausalLM, GPTLiteForSequenceClassification):
        setattr(transformers, cls.__name__, cls)
    import typer
    from transformers.cli.serve import Serve

    app = typer.Typer(add_completion=False)
    app.command()(Serve)  # the only command, so it runs without a sub-command name
    app(args=sys.argv[1:] if argv is None else argv, prog_name="python -m hf_gptlite.serve")


if __name__ == "__main__":
    main()
