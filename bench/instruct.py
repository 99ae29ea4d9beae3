"""Instruction fine-tuning benchmark: does pretraining help? The same fine-tune (FinetuneInstructConfig defaults:
full fine-tuning, 2 epochs of the 935 training records, AdamW 5e-4) from the main job's model and from random
initialisation (same architecture and tokenizer), over several seeds, in one run.

    python bench/instruct.py --pretrained runs/pretrain_pt                  # 3 seeds, both arms
    python bench/instruct.py --pretrained runs/pretrain_pt --seeds 0 --max_new_tokens 32

For each arm: validation loss (the loop's final evaluation, 55 records, prompt + response tokens) and ROUGE-L F1
on the test split (greedy, batches of 8, stop at end-of-text, at most ``--max_new_tokens`` new tokens: the
references' median is 40 characters, so 64 tokens cut few answers and keep the runtime sane), mean and spread.
Target: the pretrained arm beats random init on both. Three test responses of the pretrained arm's first seed
are printed verbatim, with their references.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from cpu import cpu_line  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", default="runs/pretrain_pt", help="the pretraining job's output folder")
    parser.add_argument("--output_dir", default="runs/bench_instruct")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--max_test_records", type=int, default=None, help="evaluate the first N test records")
    parser.add_argument("--num_epochs", type=float, default=None, help="override the fine-tune's epochs")
    parser.add_argument("--arms", nargs="+", default=["pretrained", "scratch"], choices=["pretrained", "scratch"])
    parser.add_argument("--show", type=int, nargs="+", default=[81, 3, 0],
                        help="test-record indices whose responses are printed")
    args = parser.parse_args(argv)

    import os

    import torch

    from hf_gptlite.instruct.data import load_alpaca_records, split_records
    from hf_gptlite.instruct.evaluate import RESPONSES_FILE, EvaluateInstructConfig, run_evaluate_instruct
    from hf_gptlite.instruct.finetune import FinetuneInstructConfig, run_finetune_instruct

    pretrained = Path(args.pretrained)
    if not (pretrained / "config.json").is_file():
        parser.error(f"no pretrained model at {pretrained} (run `gptlite-main` first, or pass --pretrained)")
    out = Path(args.output_dir)
    print(f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()}", flush=True)
    start_all = time.perf_counter()
    results: dict[str, list[dict]] = {}
    for arm in args.arms:
        results[arm] = []
        for seed in args.seeds:
            run_dir = out / f"{arm}_seed{seed}"
            overrides = {"num_epochs": args.num_epochs} if args.num_epochs else {}
            cfg = FinetuneInstructConfig(model_name_or_path=str(pretrained), output_dir=str(run_dir), seed=seed,
                                         from_scratch=arm == "scratch", report_to="none", save_steps=0,
                                         overwrite_output_dir=True, **overrides)
            t = time.perf_counter()
            m = run_finetune_instruct(cfg)
            train_s = time.perf_counter() - t
            t = time.perf_counter()
            e = run_evaluate_instruct(EvaluateInstructConfig(model_name_or_path=str(run_dir), seed=seed,
                                                             max_new_tokens=args.max_new_tokens,
                                                             max_records=args.max_test_records))
            results[arm].append({"seed": seed, "eval_loss": m["eval_loss"], "rouge_l": e["rouge_l"],
                                 "rouge_l_precision": e.get("rouge_l_precision"),
                                 "rouge_l_recall": e.get("rouge_l_recall"), "train_s": train_s,
                                 "eval_s": time.perf_counter() - t, "steps": m["global_step"]})
    total = time.perf_counter() - start_all

    def stat(arm, key):
        xs = [r[key] for r in results[arm]]
        return statistics.mean(xs), min(xs), max(xs)

    print(f"\ninstruction benchmark (seeds {args.seeds}, pretrained={pretrained}, test records "
          f"{args.max_test_records or 'all'}, max_new_tokens {args.max_new_tokens})\n{cpu_line()}")
    print("| arm | validation loss, mean (min-max) | ROUGE-L F1, mean (min-max) | fine-tune s / eval s (all seeds) |")
    print("|---|---|---|---|")
    for arm in results:
        loss, rl = stat(arm, "eval_loss"), stat(arm, "rouge_l")
        print(f"| {'main job model' if arm == 'pretrained' else 'random init'} | {loss[0]:.3f} ({loss[1]:.3f}-{loss[2]:.3f}) "
              f"| {rl[0]:.4f} ({rl[1]:.4f}-{rl[2]:.4f}) | {sum(r['train_s'] for r in results[arm]):.0f} / "
              f"{sum(r['eval_s'] for r in results[arm]):.0f} |")
    verdict = {}
    if {"pretrained", "scratch"} <= set(results):
        for key, better in (("eval_loss", -1), ("rouge_l", 1)):
            p, s = stat("pretrained", key)[0], stat("scratch", key)[0]
            verdict[key] = (p - s) * better > 0
            print(f"{key}: pretrained {p:.4f} vs random init {s:.4f} -> pretrained "
                  f"{'better' if verdict[key] else 'NOT better'}")
        print("target " + ("MET" if all(verdict.values()) else "MISSED"))
    print(f"whole bench {total / 60:.1f} min")
    test = split_records(load_alpaca_records())["test"]
    for arm in args.arms:
        path = out / f"{arm}_seed{args.seeds[0]}" / RESPONSES_FILE
        if not path.is_file():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        by_record = {(r["instruction"], r["input"]): r["model_response"] for r in rows}
        print(f"\nresponses of {path.parent.name} (verbatim, greedy):")
        for i in args.show:
            if i < len(test):
                r = test[i]
                prompt = r["instruction"] + (f" / input: {r['input']}" if r.get("input") else "")
                print(f"- [{i}] {prompt!r}\n    reference: {r['output']!r}\n    response:  "
                      f"{by_record.get((r['instruction'], r['input']), '(not generated)')!r}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_instruct.json").write_text(json.dumps(
        {"pretrained": str(pretrained), "seeds": args.seeds, "max_new_tokens": args.max_new_tokens,
         "results": results, "verdict": verdict, "total_s": total}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
