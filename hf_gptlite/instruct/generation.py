"""Generation with an instruction-tuned model: batched replies to conversations through the chat template
(left-padded, KV cache, greedy unless asked), one streamed chat reply, and the test-set responses file that a
rerun reuses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import InputValueError
from .data import record_to_messages

logger = logging.getLogger(__name__)


@torch.no_grad()
def generate_responses(model, tokenizer, conversations: Sequence[list[dict]], max_new_tokens: int = 256,
                       batch_size: int = 8, do_sample: bool = False, show_progress: bool = True,
                       **generate_kwargs) -> list[str]:
    """Reply to each conversation (chat messages) with ``model.generate``: batched, left-padded, KV cache,
    greedy unless ``do_sample``; each reply stops at the end-of-text token. Returns the decoded replies."""
    if not tokenizer.chat_template:
        raise InputValueError("the tokenizer has no chat template (was the model fine-tuned with finetune_instruct?)")
    model.eval()
    context = model.config.max_position_embeddings
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # new tokens follow the prompt directly in every row
    replies: list[str] = []
    try:
        for start in tqdm(range(0, len(conversations), batch_size), desc="generating", disable=not show_progress):
            batch = tokenizer.apply_chat_template(
                list(conversations[start:start + batch_size]), add_generation_prompt=True, padding=True,
                return_tensors="pt", return_dict=True,
            ).to(model.device)
            prompt_len = batch["input_ids"].shape[1]
            new = min(max_new_tokens, context - prompt_len)
            if new < 1:
                raise InputValueError(f"a prompt of {prompt_len} tokens leaves no room to generate in the model's "
                                 f"context of {context}; shorten the input")
            out = model.generate(
                **batch, max_new_tokens=new, do_sample=do_sample, use_cache=True,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **generate_kwargs,
            )  # (B, prompt_len + generated)
            replies += [t.strip() for t in tokenizer.batch_decode(out[:, prompt_len:], skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return replies


def model_fingerprint(model_dir: str | os.PathLike) -> str:
    """Changes when the weights in ``model_dir`` change (file names, sizes, modification times)."""
    files = sorted(p for p in Path(model_dir).glob("*.safetensors"))
    blob = json.dumps([(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _response_key(record: dict, settings: dict) -> str:
    blob = json.dumps([record["instruction"], record["input"], settings], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def generate_test_responses(model, tokenizer, records: Sequence[dict], path: str | os.PathLike,
                            settings: dict, batch_size: int = 8, max_new_tokens: int = 256,
                            do_sample: bool = False, show_progress: bool = True) -> list[str]:
    """Generate a response per record into the JSONL file ``path`` (rows: instruction, input, output,
    model_response, key). Rows already there with the same key (record + ``settings``, e.g. the model's
    fingerprint and the generation options) are reused, so a rerun after an interruption or a judge outage
    only generates what is missing."""
    path = Path(path)
    done = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                done[row["key"]] = row["model_response"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    keys = [_response_key(r, settings) for r in records]
    todo = [i for i, k in enumerate(keys) if k not in done]
    if len(todo) < len(records):
        logger.info("reusing %d of %d responses from %s", len(records) - len(todo), len(records), path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(todo), batch_size * 4):  # write in chunks, so an interruption keeps most
        chunk = todo[start:start + batch_size * 4]
        replies = generate_responses(model, tokenizer, [record_to_messages(records[i]) for i in chunk],
                                     max_new_tokens=max_new_tokens, batch_size=batch_size, do_sample=do_sample,
                                     show_progress=show_progress)
        with open(path, "a", encoding="utf-8") as f:
            for i, reply in zip(chunk, replies):
                done[keys[i]] = reply
                f.write(json.dumps({**records[i], "model_response": reply, "key": keys[i]}, ensure_ascii=False) + "\n")
    return [done[k] for k in keys]


def require_chat_template(name_or_path: str | os.PathLike, hint: str = "") -> None:
    """Refuse a model whose tokenizer has no chat template (not instruction-tuned here), reading only the
    tokenizer, before the weights are loaded."""
    from transformers import AutoTokenizer

    if not AutoTokenizer.from_pretrained(str(name_or_path)).chat_template:
        raise InputValueError(f"{name_or_path} has no chat template: fine-tune it with "
                              f"`python -m hf_gptlite finetune_instruct` first{f'; {hint}' if hint else ''}")


def chat_reply(model, tokenizer, messages: list[dict], max_new_tokens: int = 256, streamer=None,
               do_sample: bool = False, **generate_kwargs) -> str:
    """One reply to a conversation through the chat template (``streamer``: e.g. a ``TextStreamer``)."""
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True).to(model.device)
    prompt_len = inputs["input_ids"].shape[1]
    room = model.config.max_position_embeddings - prompt_len
    if room < 1:
        raise InputValueError(f"the conversation is {prompt_len} tokens, the model's context is "
                         f"{model.config.max_position_embeddings}: start a new one (/reset)")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=min(max_new_tokens, room), do_sample=do_sample,
                             streamer=streamer, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, **generate_kwargs)
    return tokenizer.decode(out[0, prompt_len:], skip_special_tokens=True).strip()


__all__ = ["chat_reply", "generate_responses", "generate_test_responses", "model_fingerprint", "require_chat_template"]
