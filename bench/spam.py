"""Spam classifier benchmark, every arm side by side on one shared split, in one run:

    TF-IDF + logistic regression                          C chosen on the validation split
    random init                 (recipe defaults)         the no-pretraining baseline
    random init + LM adaptation (--lm_adapt_epochs N)     the no-pretraining ablation of the adaptation option
    main-job model              (recipe defaults)         the recipe as shipped
    main-job model + LM adaptation                        ULMFiT / TAPT on the training texts, then the recipe

    python bench/spam.py --pretrained runs/pretrain_pt            # the main job's model (default path), 3 seeds
    python bench/spam.py --pretrained runs/pretrain_pt --arms tfidf pretrained --seeds 0

Each transformer row is the mean (and spread) over the seeds of `hf_gptlite.spam.run_spam_finetune` with the
recipe's defaults (SpamConfig + recipes/configs/finetune_spam.yaml) plus the flags given here; wall time is the
whole job (load, LM adaptation, tokenize, train, validate, save, test).
Targets: the recipe from the main job's model, mean test accuracy >= TF-IDF's and >= its random-init
ablation's, its 3 seeds within 10 minutes of compute.
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

TARGET_MINUTES = 10.0
ARMS = {  # name -> (label, from_scratch, LM adaptation on)
    "scratch": ("random init", True, False),
    "scratch_lm_adapt": ("random init + LM adaptation", True, True),
    "pretrained": ("main-job model", False, False),
    "pretrained_lm_adapt": ("main-job model + LM adaptation", False, True),
}


def tfidf_logreg(splits, metric, seed: int) -> dict:
    """Word 1-2-gram TF-IDF + logistic regression; C picked on validation accuracy."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x_train = vectorizer.fit_transform(splits["train"]["text"])
    y_train = list(splits["train"]["label"])
    best = None
    for c in (0.1, 1.0, 10.0, 100.0):
        clf = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(x_train, y_train)
        val = metric.compute(predictions=clf.predict(vectorizer.transform(splits["validation"]["text"])).tolist(),
                             references=list(splits["validation"]["label"]))["accuracy"]
        if best is None or val > best[0]:
            best = (val, c, clf)
    _, c, clf = best
    test = metric.compute(predictions=clf.predict(vectorizer.transform(splits["test"]["text"])).tolist(),
                          references=list(splits["test"]["label"]))
    return {"test_accuracy": test["accuracy"], "test_f1": test["f1"], "C": c}


def summarise(name: str, runs: list[dict]) -> dict:
    acc = [r["test_accuracy"] for r in runs]
    f1 = [r["test_f1"] for r in runs]
    wall = [r["wall_s"] for r in runs]
    return {
        "method": name, "seeds": len(runs),
        "test_accuracy_mean": statistics.mean(acc), "test_accuracy_min": min(acc), "test_accuracy_max": max(acc),
        "test_f1_mean": statistics.mean(f1), "wall_s_total": sum(wall), "wall_s_median": statistics.median(wall),
        "runs": runs,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", default="runs/pretrain_pt", help="the pretraining job's output folder")
    parser.add_argument("--output_dir", default="runs/bench_spam")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trainable", default=None, help="override the recipe's trainable (head|last_block|all|lora)")
    parser.add_argument("--num_epochs", type=float, default=None)
    parser.add_argument("--learning_rate", type=float, default=None)
    parser.add_argument("--full", action="store_true", help="the full imbalanced collection instead of balanced")
    parser.add_argument("--arms", nargs="+", default=["tfidf", *ARMS], choices=["tfidf", *ARMS])
    parser.add_argument("--lm_adapt_epochs", type=float, default=3.0,
                        help="LM-adaptation epochs of the '+ LM adaptation' arms (the others: the recipe default)")
    parser.add_argument("--lm_adapt_learning_rate", type=float, default=None)
    args = parser.parse_args(argv)

    import torch

    from hf_gptlite.cli import parse_config
    from hf_gptlite.spam import SpamConfig, run_spam_finetune
    from hf_gptlite.spam.data import prepare_sms_splits
    from hf_gptlite.spam.evaluate import load_metric

    pretrained = Path(args.pretrained)
    if not (pretrained / "config.json").is_file():
        parser.error(f"no pretrained model at {pretrained} (run `gptlite-main` first, or pass --pretrained)")
    out = Path(args.output_dir)
    base = parse_config(SpamConfig, ["--config", str(REPO / "recipes" / "configs" / "finetune_spam.yaml")])
    overrides = {k: getattr(args, k) for k in ("trainable", "num_epochs", "learning_rate") if getattr(args, k) is not None}
    adapt = {"lm_adapt_epochs": args.lm_adapt_epochs, "lm_adapt_steps": 0,
             **({"lm_adapt_learning_rate": args.lm_adapt_learning_rate} if args.lm_adapt_learning_rate else {})}
    split_dir = out / ("split_full" if args.full else "split_balanced")
    splits = prepare_sms_splits(split_dir, balanced=not args.full, seed=base.split_seed)
    print(f"torch threads: {torch.get_num_threads()}; split {split_dir}: "
          + ", ".join(f"{k} {v.num_rows}" for k, v in splits.items()), flush=True)

    bench_start = time.perf_counter()
    results = {}
    for kind in [a for a in ARMS if a in args.arms]:
        label, from_scratch, lm_adapt = ARMS[kind]
        runs = []
        for seed in args.seeds:
            cfg = SpamConfig(**{**vars(base), **overrides, **(adapt if lm_adapt else {}),
                                "model_name_or_path": str(pretrained),
                                "from_scratch": from_scratch, "seed": seed, "balanced": not args.full,
                                "split_dir": str(split_dir), "output_dir": str(out / f"{kind}_seed{seed}"),
                                "overwrite_output_dir": True})
            start = time.perf_counter()
            m = run_spam_finetune(cfg)
            runs.append({"seed": seed, "test_accuracy": m["test_accuracy"], "test_f1": m["test_f1"],
                         "wall_s": time.perf_counter() - start, "train_runtime_s": m["train_runtime_s"]})
        results[kind] = summarise(label, runs)
    if "tfidf" in args.arms:
        metric = load_metric()
        runs = []
        for seed in args.seeds:
            start = time.perf_counter()
            r = tfidf_logreg(splits, metric, seed)
            runs.append({"seed": seed, **r, "wall_s": time.perf_counter() - start})
        results["tfidf"] = summarise("TF-IDF + logistic regression", runs)
    total_s = time.perf_counter() - bench_start

    keys = ("trainable", "num_epochs", "learning_rate", "per_device_batch_size", "lm_adapt_epochs",
            "lm_adapt_learning_rate", "lm_adapt_block_size")
    settings = {**{k: getattr(base, k) for k in keys}, **overrides, "adaptation arms": adapt}
    print(f"\nspam benchmark ({'full' if args.full else 'balanced'} split, test n={splits['test'].num_rows}, "
          f"seeds {args.seeds}, pretrained={pretrained}, {settings})")
    print(cpu_line())
    print(f"| {'method':<38} | {'test acc (mean, min-max)':<25} | {'test F1':>7} | {'wall s (all seeds)':>18} |")
    print(f"|{'-' * 40}|{'-' * 27}|{'-' * 9}|{'-' * 20}|")
    for r in results.values():
        print(f"| {r['method']:<38} | {r['test_accuracy_mean']:.2%} ({r['test_accuracy_min']:.2%}-"
              f"{r['test_accuracy_max']:.2%}) | {r['test_f1_mean']:7.4f} | {r['wall_s_total']:18.1f} |")
    met, gap = None, None
    recipe = results.get("pretrained")
    if recipe:
        checks = []
        for other in ("tfidf", "scratch", "scratch_lm_adapt", "pretrained_lm_adapt"):
            if other in results:
                d = (recipe["test_accuracy_mean"] - results[other]["test_accuracy_mean"]) * 100
                gap = d if other == "tfidf" else gap
                print(f"recipe (main-job model) - {results[other]['method']}: {d:+.2f} accuracy points")
                if other in ("tfidf", "scratch"):
                    checks.append(d >= 0)
        within = recipe["wall_s_total"] / 60 <= TARGET_MINUTES
        checks.append(within)
        print(f"one test message = {100 / splits['test'].num_rows:.2f} points; recipe compute "
              f"{recipe['wall_s_total'] / 60:.1f} min for {len(args.seeds)} seeds (target <= {TARGET_MINUTES:.0f}); "
              f"whole bench {total_s / 60:.1f} min")
        met = all(checks)
        print("target (>= TF-IDF, >= random init, within time) " + ("MET" if met else "MISSED"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_spam.json").write_text(json.dumps(
        {"settings": settings, "pretrained": str(pretrained), "seeds": args.seeds, "balanced": not args.full,
         "results": results, "gap_points": gap, "target_met": met, "total_s": total_s}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
