"""Runs the generic training loop on a tiny in-memory causal-LM task, in one process (``python``) or several
(``accelerate launch``); the tests in test_loop_semantics.py launch it and compare what it leaves behind.

    python loop_worker.py OUT SCENARIO[:PRECISION] ... [--gas 4 --batch 2 --copies 1 --kill_at_forward N ...]

Each scenario writes ``OUT/NAME_PRECISION/``: the run folder (model.safetensors, log.jsonl, checkpoints/) and
``result_rank{R}.json`` per process (steps, plan, the error if the run raised, what accelerate ran).

The data: ``NUM_BATCHES`` batches of ``--batch`` sequences of ``SEQ_LEN`` random tokens whose labels are masked
raggedly (-100 on a random prefix of each sequence, whole sequences and one whole batch among them), in order. With
shuffling off, a step of 1 process x accumulation 4, 2 processes x accumulation 2 (accelerate deals batches to
processes in turn: process 0 gets batches 0, 2, 4, ...) and 1 x 1 with batches 4x as large (``--copies 2``: the data
twice, so its steps run over the epoch boundary of the others) sees the same examples.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM, GPTLiteForSequenceClassification
from hf_gptlite.training import TimeBudget, Trainer, TrainingConfig, TrainingDivergedError, distributed_state
from hf_gptlite.training.artifacts import attach_lora

SEQ_LEN, VOCAB = 16, 64
BATCH, NUM_BATCHES = 2, 10  # 10 micro-batches of 2 per epoch: not a multiple of the accumulation (4)


def ragged_examples(seed: int = 0) -> list[dict]:
    """NUM_BATCHES x BATCH examples; each keeps the labels of a random suffix of its tokens (none to all), and both
    examples of micro-batch 3 are fully masked: a micro-batch with no items."""
    g = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(NUM_BATCHES * BATCH):
        ids = torch.randint(0, VOCAB, (SEQ_LEN,), generator=g)
        labels = torch.randint(0, VOCAB, (SEQ_LEN,), generator=g)
        keep = int(torch.randint(0, SEQ_LEN + 1, (), generator=g))
        if i // BATCH == 3:
            keep = 0
        labels[: SEQ_LEN - keep] = -100
        examples.append({"input_ids": ids, "labels": labels})
    return examples


class NanOnRankForCausalLM(GPTLiteForCausalLM):
    """Returns a NaN loss on process ``nan_rank`` from its ``nan_forward``-th training forward on."""

    nan_rank, nan_forward, calls = None, None, 0

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        if self.training:
            type(self).calls += 1
            if distributed_state().process_index == self.nan_rank and type(self).calls >= self.nan_forward:
                out.loss = out.loss * float("nan")
        return out


class KillAtForwardForCausalLM(GPTLiteForCausalLM):
    """SIGKILLs its own process in its ``kill_at``-th training forward (mid-accumulation when it is not a step's
    first micro-batch)."""

    kill_at, calls = None, 0

    def forward(self, *args, **kwargs):
        if self.training:
            type(self).calls += 1
            if type(self).calls == self.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(*args, **kwargs)


class PlainMeanForCausalLM(GPTLiteForCausalLM):
    """The same model, declaring that its loss takes no ``num_items_in_batch``: the loop weights its mean."""

    accepts_loss_kwargs = False


def tiny_model(cls=GPTLiteForCausalLM, dropout: float = 0.0, seed: int = 0):
    config = GPTLiteConfig.from_preset("tiny", vocab_size=VOCAB, max_position_embeddings=SEQ_LEN,
                                       hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    torch.manual_seed(seed)
    return cls(config)


def training_config(out, precision="no", **kw) -> TrainingConfig:
    """5 steps, clipping on. ``adam_epsilon=1e-5``: some gradients are exactly zero in exact arithmetic (the key bias:
    softmax ignores a shift shared by all keys) and rounding noise in floating point; with the default 1e-8 Adam
    turns that noise into full-size steps of random sign, which no two summation orders share."""
    values = dict(output_dir=str(out), max_steps=5, learning_rate=1e-2, warmup_steps=1, max_grad_norm=1.0,
                  logging_steps=1, report_to="none", mixed_precision=precision, seed=3, adam_epsilon=1e-5)
    values.update(kw)
    return TrainingConfig(**values)


def make_trainer(out, precision="no", batch=BATCH, gas=4, copies=1, model_cls=GPTLiteForCausalLM, dropout=0.0,
                 eval_loader=None, lora=False, **kw) -> Trainer:
    """The loop on ``copies`` x the ragged examples in order, in batches of ``batch``, ``gas`` per step (``lora``:
    LoRA adapters r=4 on every linear layer of the blocks train, the rest is frozen)."""
    loader = DataLoader(ragged_examples() * copies, batch_size=batch, shuffle=False)
    model = tiny_model(model_cls, dropout)
    if lora:
        model = attach_lora(model, r=4, alpha=8, verbose=False)
    return Trainer(model, loader, eval_loader, None, training_config(out, precision, gradient_accumulation_steps=gas, **kw))


def classifier_eval(out) -> float:
    """eval_loss of a tiny 2-label classifier on CLASSIFIER_EXAMPLES (5: the last batch of 2 processes x batch 2 is
    uneven, accelerate pads it with duplicates), no training."""
    config = GPTLiteConfig.from_preset("tiny", vocab_size=VOCAB, max_position_embeddings=SEQ_LEN, num_labels=2,
                                       pad_token_id=0)
    torch.manual_seed(0)
    model = GPTLiteForSequenceClassification(config)
    loader = DataLoader(classifier_examples(), batch_size=2, shuffle=False)
    trainer = Trainer(model, loader, loader, None, training_config(out, max_steps=1))
    return trainer.evaluate()["eval_loss"]


def classifier_examples(n: int = 5) -> list[dict]:
    g = torch.Generator().manual_seed(5)
    return [{"input_ids": torch.randint(1, VOCAB, (SEQ_LEN,), generator=g), "attention_mask": torch.ones(SEQ_LEN,
             dtype=torch.long), "labels": torch.tensor(i % 2)} for i in range(n)]


# ---- scenarios ------------------------------------------------------------------------------------
def run(name: str, precision: str, root: Path, args) -> None:
    out = root / f"{name}_{precision}"
    state = distributed_state()
    result: dict = {"rank": state.process_index, "num_processes": state.num_processes}
    trainer = None
    start = time.perf_counter()
    try:
        if name == "equivalence":  # the regime of --gas/--batch/--copies, 5 steps
            KillAtForwardForCausalLM.kill_at = args.kill_at_forward
            trainer = make_trainer(out, precision, args.batch, args.gas, args.copies, dropout=args.dropout,
                                   model_cls=KillAtForwardForCausalLM if args.kill_at_forward else GPTLiteForCausalLM,
                                   save_steps=args.save_steps,
                                   resume_from_checkpoint=args.resume)
        elif name == "lora":  # LoRA adapters, 5 steps of accumulation 2 (2 processes: 1 x 4)
            trainer = make_trainer(out, precision, gas=args.gas, lora=True)
        elif name == "classifier_eval":
            result["eval_loss"] = classifier_eval(out)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"result_rank{state.process_index}.json").write_text(json.dumps(result))
            return
        elif name == "one_step":  # one step in the precision asked (auto: the launcher's or the hardware's)
            trainer = make_trainer(out, precision, max_steps=1)
        elif name == "budget_cap":  # max_steps 40 under a generous budget
            trainer = make_trainer(out, precision, gas=2, max_steps=40, max_train_minutes=5.0, logging_steps=10)
        elif name == "budget_time":  # the budget binds first; rank 1's clock runs 10x fast
            if state.process_index == 1:
                TimeBudget.clock = staticmethod(lambda: 10 * time.perf_counter())
            trainer = make_trainer(out, precision, gas=2, max_steps=100_000, max_train_minutes=args.minutes,
                                   logging_steps=1000)
        elif name == "nan":  # rank 1 alone sees a NaN loss from its 9th forward: step 5 with accumulation 2
            NanOnRankForCausalLM.nan_rank, NanOnRankForCausalLM.nan_forward, NanOnRankForCausalLM.calls = 1, 9, 0
            trainer = make_trainer(out, precision, gas=2, model_cls=NanOnRankForCausalLM, max_steps=10, save_steps=2)
        else:
            raise SystemExit(f"unknown scenario {name}")
        result["distributed_type"] = trainer.accelerator.distributed_type.value
        result["mixed_precision"] = trainer.accelerator.mixed_precision
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        result["wrapped"] = type(getattr(unwrapped, "get_base_model", lambda: unwrapped)().transformer.h[0]).__name__
        metrics = trainer.train()
        result["metrics"] = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    except TrainingDivergedError as e:
        result["error"] = str(e)
    except Exception:
        result["crash"] = traceback.format_exc()
    if trainer is not None:
        result.update(global_step=trainer.global_step, total_steps=trainer.total_steps, history=trainer.history)
    result["seconds"] = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    (out / f"result_rank{state.process_index}.json").write_text(json.dumps(result, indent=1, default=str))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("scenarios", nargs="+", help="NAME[:PRECISION] (precision: no | bf16 | auto; default no)")
    parser.add_argument("--gas", type=int, default=4)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--save_steps", type=int, default=0)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--kill_at_forward", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=0.05)
    parser.add_argument("--force_fsdp_on_cpu", action="store_true",
                        help="lift accelerate 1.15's CPU gate so an FSDP launch config runs FSDP2 on gloo")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    state = distributed_state()
    if args.force_fsdp_on_cpu:
        # accelerate 1.15 turns an FSDP config into MULTI_CPU (DDP) when the device is the CPU: AcceleratorState picks
        # FSDP only for GPU-like distributed types. torch 2.13's fully_shard works on gloo, so the test lifts that one
        # gate: the PartialState (process group, device cpu) is kept, only its type reads MULTI_GPU.
        from accelerate.utils import DistributedType

        assert state.distributed_type == DistributedType.MULTI_CPU, state.distributed_type
        state.distributed_type = DistributedType.MULTI_GPU
    for spec in args.scenarios:
        name, _, precision = spec.partition(":")
        run(name, precision or "no", args.out, args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
