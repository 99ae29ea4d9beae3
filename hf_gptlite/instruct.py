"""Instruction fine-tuning and its evaluation (the book's chapter 7), as library calls the recipes use.

    records (data.alpaca) -> chat template -> masked collate -> training.train -> model folder (+ chat template)
    model folder -> generate_responses (batched, left-padded, KV cache, greedy) -> test_responses.jsonl
                 -> ROUGE-L (evaluate) [+ LLM judge (judge.py)] -> metrics.json
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .data.alpaca import (
    InstructionCollator,
    load_alpaca_records,
    prepare_examples,
    record_to_messages,
    set_chat_template,
    split_records,
)
from .training import TrainingConfig, train

logger = logging.getLogger(__name__)

ROUGE_METRIC_PATH = Path(__file__).resolve().parent / "resources" / "metrics" / "rouge_l"
RESPONSES_FILE = "test_responses.jsonl"
JUDGE_CACHE_FILE = "judge_cache.jsonl"


# ---- generation ----------------------------------------------------------------------------------------


@torch.no_grad()
def generate_responses(model, tokenizer, conversations: Sequence[list[dict]], max_new_tokens: int = 256,
                       batch_size: int = 8, do_sample: bool = False, show_progress: bool = True,
                       **generate_kwargs) -> list[str]:
    """Reply to each conversation (chat messages) with ``model.generate``: batched, left-padded, KV cache,
    greedy unless ``do_sample``; each reply stops at the end-of-text token. Returns the decoded replies."""
    if not tokenizer.chat_template:
        raise ValueError("the tokenizer has no chat template (was the model fine-tuned with finetune_instruct?)")
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
                raise ValueError(f"a prompt of {prompt_len} tokens leaves no room to generate in the model's "
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


# ---- scores --------------------------------------------------------------------------------------------


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-L F1 / precision / recall through ``evaluate`` (the metric ships with the package)."""
    import evaluate

    metric = evaluate.load(str(ROUGE_METRIC_PATH))
    return metric.compute(predictions=list(predictions), references=list(references))


def update_metrics_file(model_dir: str | os.PathLike, metrics: dict) -> dict:
    """Merge ``metrics`` into ``model_dir/metrics.json`` (written atomically); returns the merged dict."""
    path = Path(model_dir) / "metrics.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged.update(metrics)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(merged, indent=2))
    os.replace(tmp, path)
    return merged


def chat_reply(model, tokenizer, messages: list[dict], max_new_tokens: int = 256, streamer=None,
               do_sample: bool = False, **generate_kwargs) -> str:
    """One reply to a conversation through the chat template (``streamer``: e.g. a ``TextStreamer``)."""
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True).to(model.device)
    prompt_len = inputs["input_ids"].shape[1]
    room = model.config.max_position_embeddings - prompt_len
    if room < 1:
        raise ValueError(f"the conversation is {prompt_len} tokens, the model's context is "
                         f"{model.config.max_position_embeddings}: start a new one (/reset)")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=min(max_new_tokens, room), do_sample=do_sample,
                             streamer=streamer, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, **generate_kwargs)
    return tokenizer.decode(out[0, prompt_len:], skip_special_tokens=True).strip()


def load_model_and_tokenizer(model_name_or_path: str, **kwargs):
    """A saved GPTLite folder (or Hub id), or GPT-2 weights (``model_type == "gpt2"``) converted to GPTLite."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from . import GPTLiteForCausalLM
    from .tokenization import load_gpt2_tokenizer

    try:
        config = AutoConfig.from_pretrained(model_name_or_path)
    except OSError as e:
        raise FileNotFoundError(f"cannot load a model from {model_name_or_path!r}: no such folder (or Hub id "
                                f"reachable). Train one first (e.g. `python -m hf_gptlite.main`) or pass "
                                f"--model_name_or_path") from e
    if config.model_type == "gpt2":
        return GPTLiteForCausalLM.from_gpt2(model_name_or_path), load_gpt2_tokenizer(model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(model_name_or_path, **kwargs)
    return model, AutoTokenizer.from_pretrained(model_name_or_path)


# ---- fine-tuning --------------------------------------------------------------------------------------


@dataclass
class FinetuneInstructConfig(TrainingConfig):
    """``recipes/finetune_instruct.py``. The defaults are the CPU run: the main job's pretrained model, the
    shipped 1,100 records, full fine-tuning."""

    model_name_or_path: str = field(default="runs/pretrain_pt", metadata={
        "help": "a pretrained GPTLite folder (default: the main job's), or GPT-2 weights (converted)"})
    output_dir: str = field(default="runs/instruct", metadata={"help": "run folder (checkpoints, logs, model)"})
    data: str | None = field(default=None, metadata={"help": "JSON/JSONL file or Hub dataset id (None: the shipped set)"})
    data_split: str = field(default="train", metadata={"help": "the Hub split read before the 85/10/5 split"})
    max_train_records: int | None = field(default=None, metadata={"help": "use only the first N training records"})
    mask_prompt: bool = field(default=False, metadata={"help": "loss on response tokens only (not the prompt)"})
    max_length: int | None = field(default=None, metadata={"help": "truncate sequences (None: the model's context)"})
    num_epochs: float = 2.0
    per_device_batch_size: int = 8
    learning_rate: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 10
    logging_steps: int = 5
    eval_steps: int = 50
    dropout: float | None = field(default=None, metadata={"help": "override the model's dropout (None: keep)"})
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters (PEFT) instead of all weights; "
                                                        "they are merged into the saved model"})
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: str = field(default="c_attn,c_proj,c_fc", metadata={"help": "comma-separated module names"})
    generation_max_new_tokens: int = field(default=256, metadata={
        "help": "default max_new_tokens saved in generation_config.json (capped at half the context)"})


def instruction_dataloaders(records: dict, tokenizer, batch_size: int, eval_batch_size: int | None,
                            max_length: int | None, mask_prompt: bool, seed: int):
    """Shuffled train batches and in-order validation batches of :class:`InstructionCollator` output."""
    from torch.utils.data import DataLoader

    collate = InstructionCollator(tokenizer.pad_token_id, tokenizer.eos_token_id, mask_prompt, max_length)
    train = prepare_examples(records["train"], tokenizer, max_length, mask_prompt)
    val = prepare_examples(records["validation"], tokenizer, max_length, mask_prompt) if records["validation"] else []
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, collate_fn=collate,
                              generator=torch.Generator().manual_seed(seed))
    val_loader = DataLoader(val, batch_size=eval_batch_size or batch_size, collate_fn=collate) if val else None
    return train_loader, val_loader


def run_finetune_instruct(cfg: FinetuneInstructConfig) -> dict:
    """Fine-tune on Alpaca records with the shared loop; the saved folder holds the model (LoRA merged), the
    tokenizer with the Alpaca chat template, metrics.json, training_config.json and loss_curve.png."""
    from transformers import set_seed

    set_seed(cfg.seed)
    model, tokenizer = load_model_and_tokenizer(cfg.model_name_or_path)
    set_chat_template(tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    context = model.config.max_position_embeddings
    max_length = min(cfg.max_length or context, context)
    if cfg.dropout is not None:
        model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = cfg.dropout
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = cfg.dropout
    model.generation_config.max_new_tokens = min(cfg.generation_max_new_tokens, context // 2)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    split = split_records(load_alpaca_records(cfg.data, cfg.data_split))
    split["train"] = split["train"][: cfg.max_train_records]
    train_loader, val_loader = instruction_dataloaders(split, tokenizer, cfg.per_device_batch_size,
                                                       cfg.per_device_eval_batch_size, max_length,
                                                       cfg.mask_prompt, cfg.seed)
    print(f"data: {len(train_loader.dataset)} train / {len(split['test'])} test / {len(split['validation'])} "
          f"validation records; max_length {max_length}; mask_prompt {cfg.mask_prompt}", flush=True)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=[m.strip() for m in cfg.lora_target_modules.split(",") if m.strip()],
                          task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
        model.print_trainable_parameters()
    metrics = train(model, train_loader, val_loader, tokenizer, cfg, run_config=dataclasses.asdict(cfg))
    if cfg.lora:  # replace the adapter files with the merged model, so every tool loads the folder as is
        out = Path(cfg.output_dir)
        model.save_pretrained(out / "lora_adapter")
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            (out / name).unlink(missing_ok=True)
        merged = model.merge_and_unload()
        merged.save_pretrained(out)
    return metrics


# ---- evaluation ----------------------------------------------------------------------------------------


@dataclass
class EvaluateInstructConfig:
    """``recipes/evaluate_instruct.py``: responses to the test split, ROUGE-L, and optionally an LLM judge."""

    model_name_or_path: str = field(default="runs/instruct", metadata={"help": "the fine-tuned model folder"})
    output_dir: str | None = field(default=None, metadata={"help": "where responses + metrics go (None: the model folder)"})
    data: str | None = field(default=None, metadata={"help": "JSON/JSONL file or Hub dataset id (None: the shipped set)"})
    data_split: str = field(default="train", metadata={"help": "the Hub split read before the 85/10/5 split"})
    split: str = field(default="test", metadata={"help": "test | validation | train (of the 85/10/5 split)"})
    max_records: int | None = field(default=None, metadata={"help": "evaluate only the first N records"})
    batch_size: int = 8
    max_new_tokens: int = 256
    do_sample: bool = field(default=False, metadata={"help": "sample instead of greedy decoding"})
    seed: int = 42
    judge: bool = field(default=False, metadata={"help": "also score the responses with an LLM judge"})
    judge_url: str = field(default="http://localhost:11434/v1", metadata={"help": "OpenAI-compatible base URL"})
    judge_model: str = field(default="llama3", metadata={"help": "the judge model's name on that server"})
    judge_timeout: float = 120.0
    judge_max_retries: int = 3

    def __post_init__(self):
        if self.split not in ("train", "test", "validation"):
            raise ValueError(f"split must be train, test or validation, got {self.split!r}")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("batch_size and max_new_tokens must be >= 1")


def run_evaluate_instruct(cfg: EvaluateInstructConfig) -> dict:
    """Generate, score, and merge the scores into ``metrics.json``; returns the new metrics.

    The responses are written before any judge is called, so an unreachable judge (``JudgeUnreachableError``,
    whose message names the URL and the responses file) loses nothing: rerun and they are reused."""
    from transformers import set_seed

    from .judge import JudgeClient, JudgeRequestError, JudgeUnreachableError, judge_responses

    set_seed(cfg.seed)
    model, tokenizer = load_model_and_tokenizer(cfg.model_name_or_path)
    out_dir = Path(cfg.output_dir or cfg.model_name_or_path)
    records = split_records(load_alpaca_records(cfg.data, cfg.data_split))[cfg.split][: cfg.max_records]
    if not records:
        raise ValueError(f"the {cfg.split} split is empty")
    settings = {"model": model_fingerprint(cfg.model_name_or_path) if Path(cfg.model_name_or_path).is_dir()
                else cfg.model_name_or_path, "max_new_tokens": cfg.max_new_tokens, "do_sample": cfg.do_sample,
                "seed": cfg.seed}
    responses_path = out_dir / f"{cfg.split}_responses.jsonl" if cfg.split != "test" else out_dir / RESPONSES_FILE
    responses = generate_test_responses(model, tokenizer, records, responses_path, settings, cfg.batch_size,
                                        cfg.max_new_tokens, cfg.do_sample)
    prefix = "" if cfg.split == "test" else f"{cfg.split}_"
    scores = rouge_l(responses, [r["output"] for r in records])
    metrics = {f"{prefix}{k}": v for k, v in scores.items()}
    metrics[f"{prefix}num_evaluated"] = len(records)
    update_metrics_file(out_dir, metrics)
    print(f"ROUGE-L on {len(records)} {cfg.split} records: {scores['rouge_l']:.4f}  (responses: {responses_path})")
    if cfg.judge:
        client = JudgeClient(url=cfg.judge_url, model=cfg.judge_model, timeout=cfg.judge_timeout,
                             max_retries=cfg.judge_max_retries)
        try:
            summary = judge_responses(records, responses, client, cache_path=out_dir / JUDGE_CACHE_FILE)
        except (JudgeUnreachableError, JudgeRequestError) as e:
            raise type(e)(f"{e}\nThe {len(responses)} generated responses are kept in {responses_path} "
                          f"(and ROUGE-L in {out_dir / 'metrics.json'}); rerun when the judge is up: they are "
                          f"reused, and so is every score already in {out_dir / JUDGE_CACHE_FILE}") from e
        judged = {f"{prefix}{k}": v for k, v in summary.items() if k != "scores"}
        metrics.update(judged)
        update_metrics_file(out_dir, judged)
        print(f"judge {cfg.judge_model}: mean {summary['judge_score_mean']} over {summary['judge_num_scored']} "
              f"scored, {summary['judge_num_unparsed']} unparsed; distribution {summary['judge_score_distribution']}")
    return metrics


# ---- chat ----------------------------------------------------------------------------------------------


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


CHAT_HELP = ("type an instruction; '/input TEXT' attaches an input to the next instruction; "
             "'/reset' clears the history; '/exit' (or Ctrl-D) quits")


def run_chat(cfg: ChatConfig, read=input, write=print) -> list[dict]:
    """The chat loop (``read``/``write`` are swappable for tests); returns the conversation."""
    from transformers import TextStreamer, set_seed

    set_seed(cfg.seed)
    model, tokenizer = load_model_and_tokenizer(cfg.model_name_or_path)
    model.eval()
    if not tokenizer.chat_template:
        raise ValueError(f"{cfg.model_name_or_path} has no chat template: fine-tune it with "
                         f"recipes/finetune_instruct.py first")
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
