"""Chat with an instruction-tuned model in the terminal; replies stream token by token (``TextStreamer``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..loading import check_model_source, load_causal_lm
from .generation import chat_reply, require_chat_template


@dataclass
class ChatConfig:
    """``recipes/chat.py``: talk to a fine-tuned model in the terminal, replies streamed as they are generated."""

    model_name_or_path: str = field(default="runs/instruct", metadata={"help": "the fine-tuned model folder"})
    max_new_tokens: int = 256
    do_sample: bool = field(default=False, metadata={"help": "sample (temperature, top_k) instead of greedy"})
    temperature: float = 0.7
    top_k: int = 40
    seed: int = 42
    keep_history: bool = field(default=False, metadata={"help": "send earlier turns too (the model was trained "
                                                                 "on single turns: off by default)"})
    system: str | None = field(default=None, metadata={"help": "replaces the Alpaca preamble line"})
    message: str | None = field(default=None, metadata={"help": "answer this one instruction and exit"})
    input: str | None = field(default=None, metadata={"help": "with --message: the '### Input:' text"})


INSTRUCT_HINT = "fine-tune one with `python -m hf_gptlite finetune_instruct` (it writes runs/instruct) or pass --model_name_or_path"
CHAT_HELP = ("type an instruction; '/input TEXT' attaches an input to the next instruction; "
             "'/reset' clears the history; '/exit' (or Ctrl-D) quits")


def run_chat(cfg: ChatConfig, read=input, write=print) -> list[dict]:
    """The chat loop (``read``/``write`` are swappable for tests); returns the conversation."""
    from transformers import TextStreamer, set_seed

    set_seed(cfg.seed)
    check_model_source(cfg.model_name_or_path, INSTRUCT_HINT)
    require_chat_template(cfg.model_name_or_path)
    model, tokenizer = load_causal_lm(cfg.model_name_or_path)
    model.eval()
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    sampling = dict(do_sample=True, temperature=cfg.temperature, top_k=cfg.top_k) if cfg.do_sample else {}
    system = [{"role": "system", "content": cfg.system}] if cfg.system else []

    def answer(history: list[dict], instruction: str, extra: str | None) -> list[dict]:
        turn = [{"role": "user", "content": instruction}] + ([{"role": "user", "content": extra}] if extra else [])
        messages = system + (history if cfg.keep_history else []) + turn
        reply = chat_reply(model, tokenizer, messages, cfg.max_new_tokens, streamer, **sampling)
        return (history if cfg.keep_history else []) + turn + [{"role": "assistant", "content": reply}]

    if cfg.message is not None:
        return answer([], cfg.message, cfg.input)
    write(CHAT_HELP)
    history: list[dict] = []
    pending_input = None
    while True:
        try:
            line = read(">>> ").strip()
        except (EOFError, KeyboardInterrupt):
            write("")
            return history
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return history
        if line == "/reset":
            history, pending_input = [], None
            write("(history cleared)")
        elif line.startswith("/input"):
            pending_input = line[len("/input"):].strip() or None
            write(f"(input set: {pending_input!r})")
        else:
            try:
                history = answer(history, line, pending_input)
            except ValueError as e:
                write(f"error: {e}")
            pending_input = None


__all__ = ["ChatConfig", "CHAT_HELP", "run_chat"]
