"""Alpaca-format instruction data: records, the prompt layout as a chat template, and the masked collate.

A record is ``{"instruction": str, "input": str, "output": str}`` (``input`` may be empty or absent). The book's
prompt layout (chapter 7) is shipped as a real Jinja chat template, so ``tokenizer.apply_chat_template``,
``pipeline("text-generation")`` with chat messages, ``transformers chat`` and ``transformers serve`` all build the
same prompt the model was fine-tuned on::

    Below is an instruction that describes a task. Write a response that appropriately completes the request.

    ### Instruction:
    {instruction}

    ### Input:            <- only when the record has an input
    {input}

    ### Response:
    {output}[EOS]

Chat messages map onto it as follows (see :data:`ALPACA_CHAT_TEMPLATE`):

- ``user``: the instruction. A *second consecutive* ``user`` message is the "### Input:" text.
- ``assistant``: the response, followed by the end-of-text token.
- ``system`` (optional, first only): replaces the preamble line "Below is an instruction ...".
- several user/assistant exchanges are rendered one Alpaca block after the other.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputValueError, MissingInputError, NotAFileError

logger = logging.getLogger(__name__)

PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
RESPONSE_HEADER = "\n\n### Response:\n"
IGNORE_INDEX = -100

# The book's format_input + "### Response:" as Jinja. `{%-`/`-%}` trim the template's own whitespace only;
# every character of the prompt comes from a quoted string or a message.
ALPACA_CHAT_TEMPLATE = (
    "{%- macro text(message) -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- else -%}{{ raise_exception('Alpaca chat template: only text content is supported') }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set preamble = text(messages[0]) -%}{%- set msgs = messages[1:] -%}"
    "{%- else -%}"
    "{%- set preamble = '" + PREAMBLE + "' -%}{%- set msgs = messages -%}"
    "{%- endif -%}"
    "{%- for m in msgs -%}"
    "{%- set prev = msgs[loop.index0 - 1]['role'] if not loop.first else 'none' -%}"
    "{%- if m['role'] == 'user' and prev != 'user' -%}"
    "{{ preamble + '\\n\\n### Instruction:\\n' + text(m) }}"
    "{%- elif m['role'] == 'user' -%}"
    "{%- if not loop.first and loop.index0 >= 2 and msgs[loop.index0 - 2]['role'] == 'user' -%}"
    "{{ raise_exception('Alpaca chat template: at most two consecutive user messages (instruction, input)') }}"
    "{%- endif -%}"
    "{{ '\\n\\n### Input:\\n' + text(m) }}"
    "{%- elif m['role'] == 'assistant' -%}"
    "{%- if prev != 'user' -%}"
    "{{ raise_exception('Alpaca chat template: an assistant message must follow a user message') }}"
    "{%- endif -%}"
    "{% generation %}{{ '\\n\\n### Response:\\n' + text(m) + eos_token }}{% endgeneration %}"
    "{%- elif m['role'] == 'system' -%}"
    "{{ raise_exception('Alpaca chat template: a system message is only allowed first') }}"
    "{%- else -%}"
    "{{ raise_exception('Alpaca chat template: unsupported role ' + m['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt and msgs and msgs[-1]['role'] == 'user' -%}"
    "{{ '\\n\\n### Response:\\n' }}"
    "{%- endif -%}"
)


def format_input(record: dict) -> str:
    """The book's ``format_input``: preamble, instruction and (when present) input, without the response header."""
    text = f"{PREAMBLE}\n\n### Instruction:\n{record['instruction']}"
    return text + (f"\n\n### Input:\n{record['input']}" if record.get("input") else "")


def record_to_messages(record: dict, with_response: bool = False) -> list[dict]:
    """Chat messages for a record: user = instruction, a second user message = input, assistant = output."""
    messages = [{"role": "user", "content": record["instruction"]}]
    if record.get("input"):
        messages.append({"role": "user", "content": record["input"]})
    if with_response:
        messages.append({"role": "assistant", "content": record["output"]})
    return messages


def set_chat_template(tokenizer):
    """Make ``tokenizer`` a chat tokenizer: the Alpaca chat template (saved by ``save_pretrained`` as
    ``chat_template.jinja``) and ``split_special_tokens=False`` (saved in tokenizer_config.json).

    The template ends every assistant turn with the text of the EOS token. A base tokenizer of this package
    encodes special-looking text as plain bytes (``split_special_tokens=True``: a document cannot forge a
    boundary), which would turn each end of turn into five byte tokens, so multi-turn histories
    (``chat --keep_history``, ``transformers serve`` with several messages, SFT on the rendered template) would
    never show the model its real end-of-turn id. A chat tokenizer therefore reads the special-token texts as
    the special ids, as every transformers chat model does: "[EOS]" typed by a user also ends a turn.
    """
    if tokenizer.eos_token is None:
        raise InputValueError("the tokenizer has no eos_token: the Alpaca template ends each response with it")
    tokenizer.chat_template = ALPACA_CHAT_TEMPLATE
    tokenizer.split_special_tokens = False
    return tokenizer


# ---- records -------------------------------------------------------------------------------------------


def default_instruction_file() -> Path:
    """The shipped 1,100-record set (github.com/rasbt/LLMs-from-scratch, Apache-2.0)."""
    return Path(__file__).resolve().parent.parent / "resources" / "instructions" / "instruction-data.json"


def validate_records(records: Sequence, source: str = "records") -> list[dict]:
    """Check each record and return clean ``{"instruction", "input", "output"}`` dicts.

    ``instruction`` must be a non-empty string and ``output`` a string; ``input`` may be absent or ``None``
    (= no input). Anything else raises ``ValueError`` naming the record's index.
    """
    clean = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise InputValueError(f"{source}: record {i} is a {type(rec).__name__}, expected an object with "
                             f"'instruction', 'input', 'output'")
        missing = [k for k in ("instruction", "output") if rec.get(k) is None]
        if missing:
            raise InputValueError(f"{source}: record {i} is missing {', '.join(repr(k) for k in missing)} "
                             f"(has {sorted(rec)})")
        inp = rec.get("input") or ""
        for key, value in (("instruction", rec["instruction"]), ("input", inp), ("output", rec["output"])):
            if not isinstance(value, str):
                raise InputValueError(f"{source}: record {i} field {key!r} must be a string, got {type(value).__name__}")
        if not rec["instruction"].strip():
            raise InputValueError(f"{source}: record {i} has an empty 'instruction'")
        clean.append({"instruction": rec["instruction"], "input": inp, "output": rec["output"]})
    if not clean:
        raise InputValueError(f"{source}: no records")
    return clean


def load_alpaca_records(source: str | Path | None = None, split: str = "train") -> list[dict]:
    """Alpaca records from the shipped set (``None``), a local ``.json`` (a list) / ``.jsonl`` file, or a Hub
    dataset id such as ``tatsu-lab/alpaca`` (``datasets.load_dataset(source, split=split)``)."""
    if source is None:
        source = default_instruction_file()
    path = Path(source)
    if path.is_file():
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputValueError(f"{path} is not valid UTF-8 (byte {e.start}: {data[e.start:e.start + 4]!r})") from None
        if not text.strip():
            raise InputValueError(f"{path} is empty")
        if path.suffix == ".jsonl":
            records = []
            for n, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise InputValueError(f"{path}: line {n} is not valid JSON ({e.msg})") from e
        else:
            try:
                records = json.loads(text)
            except json.JSONDecodeError as e:
                raise InputValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
            if not isinstance(records, list):
                raise InputValueError(f"{path}: expected a JSON list of records, got a {type(records).__name__}")
        return validate_records(records, str(path))
    if path.is_dir():
        raise NotAFileError(f"instruction data {str(path)!r} is a folder: pass a .json or .jsonl file")
    if path.suffix in (".json", ".jsonl"):
        raise MissingInputError(f"instruction data file not found: {path}")
    from datasets import load_dataset

    from ..loading import resolve_source

    resolve_source(str(source), "instruction data", repo_type="dataset")  # neither a file nor a Hub id: say so
    dataset = load_dataset(str(source), split=split)
    return validate_records(list(dataset), f"{source} ({split})")


def split_records(records: Sequence[dict], train_fraction: float = 0.85, test_fraction: float = 0.10):
    """The book's split, no shuffle: first 85% train, next 10% test, the rest validation."""
    if not (0 < train_fraction and 0 <= test_fraction and train_fraction + test_fraction <= 1):
        raise ValueError(f"bad split fractions train={train_fraction} test={test_fraction}")
    n_train = int(len(records) * train_fraction)
    n_test = int(len(records) * test_fraction)
    return {
        "train": list(records[:n_train]),
        "test": list(records[n_train:n_train + n_test]),
        "validation": list(records[n_train + n_test:]),
    }


# ---- tokenization + collate ----------------------------------------------------------------------------


def tokenize_records(records: Sequence[dict], tokenizer) -> list[dict]:
    """``[{"input_ids": prompt + response ids, "prompt_length": len(prompt ids)}]`` (no end-of-text yet: the
    collate appends it). The prompt is the tokenizer's chat template with ``add_generation_prompt=True``, so
    training sees exactly the ids that generation will start from."""
    if not tokenizer.chat_template:
        raise ValueError("the tokenizer has no chat template: call hf_gptlite.instruct.data.set_chat_template first")
    prompts = [tokenizer.apply_chat_template(record_to_messages(r), tokenize=False, add_generation_prompt=True)
               for r in records]
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer([r["output"] for r in records], add_special_tokens=False)["input_ids"]
    return [{"input_ids": p + r, "prompt_length": len(p)} for p, r in zip(prompt_ids, response_ids)]


@dataclass
class InstructionCollator:
    """Batch tokenized records for causal-LM fine-tuning (the book's ``custom_collate_fn``).

    Each sequence gets the end-of-text token appended, is cut to ``max_length`` and right-padded with
    ``pad_token_id``. ``labels`` follow the transformers convention: aligned with ``input_ids`` and shifted by
    one *inside* the model, so the book's targets are ``labels[:, 1:]`` (position t predicts token t+1).
    Padding is ``-100`` (by length, not by token value, so the first end-of-text stays a target even when
    pad == eos, as with GPT-2) and, with ``mask_prompt``, so is every prompt token: only the response and its
    end-of-text count in the loss.

    Returns ``input_ids``, ``attention_mask``, ``labels``: (B, T) with T = the longest sequence in the batch.
    """

    pad_token_id: int
    eos_token_id: int
    mask_prompt: bool = False
    max_length: int | None = None

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        seqs, prompt_lengths = [], []
        for ex in examples:
            ids = list(ex["input_ids"]) + [self.eos_token_id]
            seqs.append(ids[: self.max_length] if self.max_length else ids)
            prompt_lengths.append(ex.get("prompt_length", 0))
        B, T = len(seqs), max(len(s) for s in seqs)
        input_ids = torch.full((B, T), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((B, T), dtype=torch.long)
        labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
        for i, ids in enumerate(seqs):
            n = len(ids)
            input_ids[i, :n] = torch.tensor(ids)
            attention_mask[i, :n] = 1
            labels[i, :n] = input_ids[i, :n]
            if self.mask_prompt:
                labels[i, : prompt_lengths[i]] = IGNORE_INDEX
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def prepare_examples(records: Sequence[dict], tokenizer, max_length: int | None, mask_prompt: bool) -> list[dict]:
    """Tokenize records; with ``mask_prompt``, drop those whose prompt alone fills ``max_length`` (no target
    left: a batch of only those would make the loss 0/0). Logs how many were cut or dropped."""
    examples = tokenize_records(records, tokenizer)
    if max_length:
        cut = sum(len(e["input_ids"]) + 1 > max_length for e in examples)
        if cut:
            logger.warning("%d of %d records are longer than max_length=%d tokens and are truncated",
                           cut, len(examples), max_length)
        if mask_prompt:
            kept = [e for e in examples if e["prompt_length"] < max_length]
            if len(kept) < len(examples):
                logger.warning("dropped %d records whose prompt alone reaches max_length=%d",
                               len(examples) - len(kept), max_length)
            examples = kept
    return examples


__all__ = [
    "ALPACA_CHAT_TEMPLATE",
    "IGNORE_INDEX",
    "PREAMBLE",
    "InstructionCollator",
    "default_instruction_file",
    "format_input",
    "load_alpaca_records",
    "prepare_examples",
    "record_to_messages",
    "set_chat_template",
    "split_records",
    "tokenize_records",
    "validate_records",
]
