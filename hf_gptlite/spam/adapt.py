"""Domain-adaptive language modelling before classification (ULMFiT, Howard & Ruder 2018; "task-adaptive
pretraining", Gururangan et al. 2020): the causal LM keeps training with its own objective on the task's
unlabelled TRAINING texts, then the classifier starts from the adapted weights.

    training texts (never validation/test) -> pretrain's packing (doc [EOS] doc [EOS] ..., blocks)
      -> training.train with the LM metric function -> OUTPUT_DIR/lm_adapt (a causal-LM folder)
      -> load_classifier_from_lm(OUTPUT_DIR/lm_adapt) (fresh head) -> the classification phase

Any labelled text data set works: only its ``text`` column of the training split is read.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from ..pretrain.data import build_lm_data, check_block_size, lm_dataloaders
from ..pretrain.metrics import lm_metrics
from ..training import TrainingConfig, distributed_state, steps_per_epoch, train

ADAPT_DIR = "lm_adapt"


def lm_adapt_enabled(cfg) -> bool:
    return cfg.lm_adapt_steps > 0 or cfg.lm_adapt_epochs > 0


def adapt_language_model(cfg, train_texts: list[str], out_dir: str | Path) -> Path:
    """Train the causal LM of ``cfg.model_name_or_path`` (random weights with ``cfg.from_scratch``) on
    ``train_texts`` for ``cfg.lm_adapt_steps`` optimizer steps (or ``cfg.lm_adapt_epochs`` passes); save it to
    ``out_dir`` with its tokenizer and return that folder. ``cfg`` is a ``SpamConfig``."""
    from accelerate.utils import set_seed

    from ..loading import load_causal_lm
    from ..modeling_gptlite import GPTLiteForCausalLM
    from ..tokenization import ensure_pad_token

    set_seed(cfg.seed)
    model, tokenizer = load_causal_lm(cfg.model_name_or_path)
    if cfg.from_scratch:  # same architecture and tokenizer, random weights: the no-pretraining ablation
        model = GPTLiteForCausalLM(type(model.config).from_dict(model.config.to_dict()))
    tokenizer = ensure_pad_token(tokenizer)
    context = model.config.max_position_embeddings
    block_size = min(cfg.lm_adapt_block_size or context, context)
    check_block_size(block_size, context)
    texts = [t for t in train_texts if t and t.strip()]
    data = build_lm_data(tokenizer, block_size, train_docs=texts)
    loader, _ = lm_dataloaders(data, cfg.lm_adapt_batch_size, seed=cfg.seed)
    n_blocks = len(data.train)
    # an epoch is one pass over the blocks, however they are dealt to processes and accumulated into steps
    per_epoch = steps_per_epoch(len(loader), distributed_state().num_processes, cfg.gradient_accumulation_steps)
    steps = cfg.lm_adapt_steps if cfg.lm_adapt_steps > 0 else max(1, math.ceil(cfg.lm_adapt_epochs * per_epoch))
    shared = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainingConfig)}
    lm_cfg = TrainingConfig(**{
        **shared, "output_dir": str(out_dir), "max_steps": steps, "max_train_minutes": None,
        "learning_rate": cfg.lm_adapt_learning_rate, "per_device_batch_size": cfg.lm_adapt_batch_size,
        "warmup_steps": min(cfg.lm_adapt_warmup_steps, max(0, steps - 1)), "eval_steps": 0, "save_steps": 0,
        "sample_steps": 0, "sample_prompt": None, "resume_from_checkpoint": None,
        # the adaptation runs again when the classification run is resumed: its old run is replaced
        "overwrite_output_dir": cfg.overwrite_output_dir or bool(cfg.resume_from_checkpoint),
    })
    print(f"LM adaptation: {len(texts)} training texts -> {n_blocks} blocks of {block_size} tokens; "
          f"{steps} steps of {cfg.lm_adapt_batch_size} blocks x {cfg.gradient_accumulation_steps} accumulation x "
          f"{distributed_state().num_processes} processes ({steps / per_epoch:.1f} epochs), lr {cfg.lm_adapt_learning_rate:g}", flush=True)
    train(model, loader, None, tokenizer, lm_cfg, compute_metrics=lm_metrics(),
          run_config={**dataclasses.asdict(lm_cfg), "phase": "lm_adapt", "source": str(cfg.model_name_or_path),
                      "from_scratch": cfg.from_scratch, "num_texts": len(texts), "block_size": block_size})
    return Path(out_dir)


__all__ = ["ADAPT_DIR", "adapt_language_model", "lm_adapt_enabled"]
