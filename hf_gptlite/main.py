"""The main job: ``gptlite-main`` (or ``python -m hf_gptlite.main``).

With no arguments it trains a byte-level BPE tokenizer and pretrains a small GPTLite on the embedded Portuguese
novels (about 10 minutes on 2 CPU cores), evaluates it on held-out text of every novel (loss, perplexity, bits
per character), plots the loss curve, writes a model folder that ``AutoModelForCausalLM`` loads, then loads that
folder back and continues a Portuguese prompt. Any ``PretrainConfig`` field is a flag (``--help``), and
``--config FILE.yaml`` reads them from a file.
"""

from __future__ import annotations

import json
import sys

DEMO_PROMPT = "A casa ficava no alto da rua, e"


def generate_from_folder(folder: str, prompt: str = DEMO_PROMPT, max_new_tokens: int = 60, seed: int = 0) -> str:
    """Load a saved model folder with the Auto classes and sample a continuation of ``prompt``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import hf_gptlite  # noqa: F401  (registers the Auto classes)

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    torch.manual_seed(seed)
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=True, top_k=40, temperature=0.8,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(ids[0], skip_special_tokens=True)


def main(argv: list[str] | None = None) -> dict:
    from .pretraining import PretrainConfig, run_pretraining
    from .training import distributed_state, parse_config

    cfg = parse_config(PretrainConfig, sys.argv[1:] if argv is None else argv)
    metrics = run_pretraining(cfg)
    if distributed_state().is_main_process:
        shown = {k: metrics[k] for k in ("eval_loss", "eval_perplexity", "eval_bits_per_char", "train_runtime_s",
                                         "tokens_per_s", "global_step", "num_parameters") if k in metrics}
        print("\nfinal metrics:", json.dumps(shown, indent=2))
        print(f"model folder: {cfg.output_dir} (AutoModelForCausalLM.from_pretrained loads it after `import hf_gptlite`)")
        print(f"loss curve:   {cfg.output_dir}/loss_curve.png")
        text = generate_from_folder(cfg.output_dir)
        print(f"\nsample from the saved model:\n  {text}")
        metrics["demo_sample"] = text
    return metrics


if __name__ == "__main__":
    main()
