"""Sweep of the main job's pretraining settings, by measurement, at FIXED step budgets (so bits/char compares
fairly whatever the machine's load), plus separate short speed probes (tokens/s, with the load average) from
which the steps that fit the 8.5-minute budget are predicted for each CPU kind.

    python bench/sweep_pretrain.py speed d256_v8k d192_v4k --mixed_precision auto    # tokens/s probes (~40 steps)
    python bench/sweep_pretrain.py speed d256_v8k --mixed_precision no               # the fp32 path (AVX2 estimate)
    python bench/sweep_pretrain.py run d192_v4k --steps 600                          # one fixed-budget run
    python bench/sweep_pretrain.py table                                              # every run recorded so far
    python bench/sweep_pretrain.py plot runs/sweep/A_s900 runs/sweep/B_s1500 --out docs/pretrain_sweep.png

Every run appends one JSON line to ``runs/sweep/results.jsonl`` (config, steps, tokens, tokens/s, bits/char,
load average before/after, threads, precision) and ``table`` prints them all. A run is
``python -m hf_gptlite pretrain`` with ``--max_train_minutes 0 --max_steps N`` (the cosine horizon is N, as in a
time-budgeted run that fits N steps) and a complete validation pass every ``N/6`` steps for the curve.

Step predictions (``table`` prints them): steps in the budget = (budget - evaluation overhead) / (tokens per step /
tokens/s). The AVX2 column is an ESTIMATE: this machine's fp32 (``--mixed_precision no``) tokens/s times
AVX2_OVER_FP32_HERE, the ratio measured for the old default (1,852 tokens/s on the AVX2 development machine,
README) over the same config's fp32 speed here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from cpu import cpu_line  # noqa: E402

SWEEP_DIR = REPO / "runs" / "sweep"
RESULTS = SWEEP_DIR / "results.jsonl"
BUDGET_S = 8.5 * 60
# tokens/s of the OLD default (d256 x 4 layers, vocab 8192, batch 8x256, fp32) on the AVX2 development machine,
# README "Pretraining / Measured": 446 steps x 2048 tokens in 8.51 min of loop = 1,852 tokens/s overall.
AVX2_OLD_DEFAULT_TOKENS_PER_S = 1852.0
MAX_LOAD_2_THREADS = 4.5

# name -> PretrainConfig overrides. Head size 64 (heads = hidden / 64), 32 where 64 does not divide the width. Every config is a GPT-2: learned
# positions, LayerNorm, GELU, tied head.
CONFIGS: dict[str, dict] = {
    # the old default
    "d256_v8k": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, vocab_size=8192),
    # vocabulary (bits/char is tokenizer-independent)
    "d256_v4k": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, vocab_size=4096),
    "d256_v2k": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, vocab_size=2048),
    # width / depth
    "d192_v4k": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, vocab_size=4096),
    "d192_l6_v4k": dict(hidden_size=192, num_hidden_layers=6, num_attention_heads=3, vocab_size=4096),
    "d128_v4k": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=2, vocab_size=4096),
    "d128_l6_v4k": dict(hidden_size=128, num_hidden_layers=6, num_attention_heads=2, vocab_size=4096),
    "d128_l6_v8k": dict(hidden_size=128, num_hidden_layers=6, num_attention_heads=2, vocab_size=8192),
    "d192_v2k": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, vocab_size=2048),
    "d128_v8k": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=2, vocab_size=8192),
    "d128_l3_v4k": dict(hidden_size=128, num_hidden_layers=3, num_attention_heads=2, vocab_size=4096),
    "d128_v2k": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=2, vocab_size=2048),
    "d128_v16k": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=2, vocab_size=16384),
    "d96_v8k": dict(hidden_size=96, num_hidden_layers=4, num_attention_heads=3, vocab_size=8192),
    "d96_v4k": dict(hidden_size=96, num_hidden_layers=4, num_attention_heads=3, vocab_size=4096),
    "d160_v4k": dict(hidden_size=160, num_hidden_layers=4, num_attention_heads=5, vocab_size=4096),
    "d256_l3_v4k": dict(hidden_size=256, num_hidden_layers=3, num_attention_heads=4, vocab_size=4096),
}
# optimisation variants applied on top of a shape: name suffix -> overrides
VARIANTS: dict[str, dict] = {
    "": {},
    "lr1e3": dict(learning_rate=1e-3),
    "lr3e3": dict(learning_rate=3e-3),
    "lr4e3": dict(learning_rate=4e-3),
    "lr6e3": dict(learning_rate=6e-3),
    "w60": dict(warmup_steps=60),
    "bs4": dict(per_device_batch_size=4),
    "bs16": dict(per_device_batch_size=16),
    "drop1": dict(dropout=0.1),
    "mlr0": dict(min_lr_ratio=0.0),
    "untied": dict(tie_word_embeddings=False),
}


def resolve(spec: str) -> dict:
    """``shape[+variant[+variant]]`` -> overrides, e.g. ``d192_v4k+lr3e3+bs16``."""
    shape, *variants = spec.split("+")
    if shape not in CONFIGS:
        raise SystemExit(f"unknown config {shape!r}; choose from {sorted(CONFIGS)}")
    out = dict(CONFIGS[shape])
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r}; choose from {sorted(k for k in VARIANTS if k)}")
        out.update(VARIANTS[v])
    return out


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def tokenizer_dir(vocab: int) -> Path:
    """One tokenizer per vocabulary, trained exactly as the job trains it (same documents, same settings)."""
    folder = SWEEP_DIR / f"tokenizer_v{vocab}"
    if not (folder / "tokenizer.json").is_file():
        from hf_gptlite.pretrain.config import PretrainConfig
        from hf_gptlite.pretrain.data import load_text_documents
        from hf_gptlite.tokenization import train_bpe_tokenizer

        cfg = PretrainConfig()
        train_docs, _ = load_text_documents(cfg.train_files, cfg.clean_text, cfg.validation_fraction)
        tok = train_bpe_tokenizer(train_docs, vocab_size=vocab, min_frequency=cfg.tokenizer_min_frequency,
                                  show_progress=False)
        tok.save_pretrained(folder)
        ids = tok(train_docs, add_special_tokens=False)["input_ids"]
        n = sum(len(x) + 1 for x in ids)  # + one [EOS] per document, as packed
        (folder / "corpus_stats.json").write_text(json.dumps(
            {"train_tokens": n, "train_chars": sum(map(len, train_docs)), "block_tokens": n // 256 * 256}))
    return folder


def train_tokens(vocab: int) -> int:
    return json.loads((tokenizer_dir(vocab) / "corpus_stats.json").read_text())["block_tokens"]


def child(payload: str) -> None:
    """Runs inside the subprocess: one pretraining run from a JSON dict of PretrainConfig fields."""
    from hf_gptlite.pretrain.config import PretrainConfig
    from hf_gptlite.pretrain.run import run_pretraining

    metrics = run_pretraining(PretrainConfig(**json.loads(payload)))
    Path(json.loads(payload)["output_dir"], "sweep_metrics.json").write_text(json.dumps(metrics, default=str))


def launch(spec: str, steps: int, kind: str, mixed_precision: str, threads: int, eval_every: int | None,
           seed: int) -> dict:
    over = resolve(spec)
    vocab = over.pop("vocab_size")
    name = f"{spec}_s{steps}" + ("" if mixed_precision == "auto" else f"_{mixed_precision}") + (
        f"_seed{seed}" if seed != 42 else "")
    out = SWEEP_DIR / name
    fields = dict(
        output_dir=str(out), tokenizer_name_or_path=str(tokenizer_dir(vocab)), max_train_minutes=0,
        max_steps=steps, save_steps=0, report_to="none", sample_prompt=None, mixed_precision=mixed_precision,
        overwrite_output_dir=True,
        seed=seed, per_device_eval_batch_size=32, logging_steps=10,
        eval_steps=eval_every or max(1, steps // 6), eval_max_batches=None, **over,
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), "TQDM_DISABLE": "1"}
    load_before = load_average()
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, "_child", json.dumps(fields)], check=True, env=env, cwd=REPO)
    wall = time.perf_counter() - start
    metrics = json.loads((out / "sweep_metrics.json").read_text())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    windows = [r["tokens_per_s"] for r in log if "tokens_per_s" in r]
    tokens_per_step = metrics["train_tokens"] / max(1, metrics["global_step"])
    curve = [(r["step"] * tokens_per_step, r["eval_bits_per_char"]) for r in log if "eval_bits_per_char" in r]
    record = {
        "name": name, "spec": spec, "kind": kind, "vocab_size": vocab, **over, "steps": metrics["global_step"],
        "tokens": metrics["train_tokens"], "tokens_per_step": tokens_per_step,
        "epochs": round(metrics["train_tokens"] / train_tokens(vocab), 2),
        "tokens_per_s": metrics["tokens_per_s"],
        "tokens_per_s_median_window": statistics.median(windows[1:] or windows) if windows else None,
        "bits_per_char": metrics.get("eval_bits_per_char"), "eval_loss": metrics.get("eval_loss"),
        "train_loss": metrics.get("train_loss"), "params": metrics["num_parameters"],
        "mixed_precision": metrics["mixed_precision"], "threads": threads, "seed": seed,
        "wall_s": round(wall, 1), "load_before": load_before, "load_after": load_average(), "curve": curve,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": cpu_line(),
    }
    SWEEP_DIR.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(record) + "\n")
    return record


def speed_probe(specs: list[str], precisions: list[str], reps: int, steps: int, threads: int) -> list[dict]:
    """tokens/s of one training step (forward, backward, clipping, fused AdamW; bf16 autocast when asked), as the
    loop runs it, on random tokens of batch 8 x 256, every config and precision interleaved in each repetition
    (so a burst of load hits all of them alike); the best repetition of each is its least-disturbed speed."""
    import torch

    from hf_gptlite.modeling_gptlite import GPTLiteForCausalLM
    from hf_gptlite.pretrain.config import PretrainConfig, build_model_config
    from hf_gptlite.training.optim import create_optimizer

    torch.set_num_threads(threads)
    setups = []
    for spec in specs:
        over = resolve(spec)
        vocab = over.pop("vocab_size")
        cfg = PretrainConfig(**{k: v for k, v in over.items()})
        config = build_model_config(cfg)
        config.vocab_size = vocab
        for precision in precisions:
            torch.manual_seed(0)
            model = GPTLiteForCausalLM._from_config(config, attn_implementation="sdpa").train()
            opt = create_optimizer(model, cfg, torch.device("cpu"))
            bs = cfg.per_device_batch_size
            x = torch.randint(3, vocab, (bs, 256))
            setups.append(dict(spec=spec, precision=precision, model=model, opt=opt, x=x, times=[]))

    def step(s):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=s["precision"] == "bf16"):
            loss = s["model"](input_ids=s["x"], labels=s["x"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(s["model"].parameters(), 1.0)
        s["opt"].step()
        s["opt"].zero_grad(set_to_none=True)

    load_before = load_average()
    for s in setups:  # warm-up
        for _ in range(3):
            step(s)
    for _ in range(reps):
        for s in setups:
            t = time.perf_counter()
            for _ in range(steps):
                step(s)
            s["times"].append((time.perf_counter() - t) / steps)
    records = []
    for s in setups:
        tokens = s["x"].numel()
        rec = {"name": f"{s['spec']}_speed_{s['precision']}", "spec": s["spec"], "kind": "speed",
               "mixed_precision": s["precision"], "threads": threads,
               "tokens_per_s_best": tokens / min(s["times"]), "tokens_per_s_median": tokens / statistics.median(s["times"]),
               "tokens_per_step": tokens, "reps": reps, "steps_per_rep": steps,
               "params": sum(p.numel() for p in s["model"].parameters()),
               "load_before": load_before, "load_after": load_average(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        records.append(rec)
        print(f"{rec['name']:<28} best {rec['tokens_per_s_best']:8,.0f} tok/s  median {rec['tokens_per_s_median']:8,.0f}"
              f"  ({rec['params'] / 1e6:.2f}M params)", flush=True)
    print(f"load average before {load_before}, after {load_average()}\n{cpu_line()}")
    SWEEP_DIR.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    return records


def read_results() -> list[dict]:
    return [json.loads(x) for x in RESULTS.read_text().splitlines() if x.strip()] if RESULTS.exists() else []


def speeds(records: list[dict]) -> dict[tuple[str, str, int], float]:
    """(spec without LR/warmup variants, precision, threads) -> best tokens/s of its probes (least disturbed)."""
    best: dict[tuple[str, str, int], float] = {}
    for r in records:
        # a 2-thread probe under a 1-minute load average above 4.5 (on 2 cores) measured the scheduler, not the step
        if r["kind"] == "speed" and not (r["threads"] > 1 and r["load_before"][0] > MAX_LOAD_2_THREADS):
            key = (speed_key(r["spec"]), r["mixed_precision"], r["threads"])
            best[key] = max(best.get(key, 0.0), r["tokens_per_s_best"])
    return best


def speed_key(spec: str) -> str:
    """Only the shape and the batch size change the speed."""
    shape, *variants = spec.split("+")
    return "+".join([shape, *[v for v in variants if v.startswith("bs")]])


def flops_per_token(over: dict, block: int = 256) -> float:
    """Training FLOPs per token: 6 x (matmul parameters incl. the tied output layer) + 6 L T d for attention
    (causal: half the T x T scores on average), the usual estimate."""
    d, layers, vocab = over["hidden_size"], over["num_hidden_layers"], over["vocab_size"]
    return 6 * (12 * layers * d * d + vocab * d) + 6 * layers * block * d


def predicted_steps(tokens_per_s: float | None, tokens_per_step: float, eval_fraction: float = 0.03) -> int | None:
    """Optimizer steps that fit the 8.5-minute budget (3% of it spent on the periodic evaluations)."""
    if not tokens_per_s:
        return None
    return int(BUDGET_S * (1 - eval_fraction) * tokens_per_s / tokens_per_step)


def avx2_tokens_per_s(sp: dict, key: str, threads: int = 1) -> float | None:
    """ESTIMATE: fp32 tokens/s here x (AVX2 / here) of the old default, both probed with ``threads`` threads.
    One thread by default: on this shared 2-core machine a 1-thread probe is the least disturbed (2-thread steps
    stall at every OpenMP barrier when other processes run)."""
    ref, mine = sp.get(("d256_v8k", "no", threads)), sp.get((key, "no", threads))
    return mine * AVX2_OLD_DEFAULT_TOKENS_PER_S / ref if ref and mine else None


def print_table(records: list[dict]) -> None:
    sp = speeds(records)
    print("\nspeed probes (tokens/s of one training step on batch 8x256 unless +bsN; best of the interleaved "
          "repetitions; load average 1/5/15 min at the start):")
    print("| config | precision | threads | tokens/s best (median) | FLOPs/token | load before |")
    print("|---|---|---|---|---|---|")
    for r in records:
        if r["kind"] == "speed":
            over = resolve(r["spec"])
            disturbed = " (disturbed)" if r["tokens_per_s_median"] < 0.85 * r["tokens_per_s_best"] else ""
            if r["threads"] > 1 and r["load_before"][0] > MAX_LOAD_2_THREADS:
                disturbed += " (not used: 2 threads under load)"
            print(f"| {r['spec']} | {r['mixed_precision']} | {r['threads']} | {r['tokens_per_s_best']:,.0f} "
                  f"({r['tokens_per_s_median']:,.0f}){disturbed} | {flops_per_token(over) / 1e6:.1f}M | "
                  f"{'/'.join(map(str, r['load_before']))} |")
    print("\nsteps in the 8.5-minute budget. AVX2 = ESTIMATE: 1-thread fp32 speed here x the old default's "
          "AVX2 (2 threads, measured) / here (1 thread) ratio; the 2-thread column uses the 2-thread probes where a "
          "quiet one exists. bf16 here: the best 2-thread bf16 probe (a lower bound under load).")
    print("| config | FLOPs/token | AVX2 est. tokens/s (1-thread / 2-thread ratio) | AVX2 est. steps | bf16-here steps |")
    print("|---|---|---|---|---|")
    for key in dict.fromkeys(k[0] for k in sp):
        tokens_per_step = 256 * resolve(key).get("per_device_batch_size", 8)
        avx, avx2t = avx2_tokens_per_s(sp, key, 1), avx2_tokens_per_s(sp, key, 2)
        bf = max(sp.get((key, "bf16", 2), 0), sp.get((key, "bf16", 1), 0))
        print(f"| {key} | {flops_per_token(resolve(key)) / 1e6:.1f}M | {avx or 0:,.0f} / {avx2t or 0:,.0f} | "
              f"{predicted_steps(avx, tokens_per_step)} / {predicted_steps(avx2t, tokens_per_step)} | "
              f"{predicted_steps(bf, tokens_per_step)} |")
    print("\nfixed-budget runs (bits/char on the complete held-out validation text; 'AVX2 budget' = steps / "
          "AVX2-estimated steps of that config, so runs with the same fraction had the same AVX2 compute):")
    print("| run | params | vocab | lr | batch | steps | tokens | epochs | precision | AVX2 budget | bits/char | wall s "
          "| load before → after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in records:
        if r["kind"] != "run":
            continue
        key = speed_key(r["spec"])
        avx = predicted_steps(avx2_tokens_per_s(sp, key, 1) or avx2_tokens_per_s(sp, key, 2), r["tokens_per_step"])
        print(f"| {r['name']} | {r['params'] / 1e6:.2f}M | {r['vocab_size']} | {r.get('learning_rate', 2e-3):g} | "
              f"{r.get('per_device_batch_size', 8)} | {r['steps']} | {r['tokens']:,} | {r.get('epochs', '')} | "
              f"{r['mixed_precision']} | {r['steps'] / avx:.2f} | **{r['bits_per_char']:.3f}** | {r['wall_s']:.0f} | "
              f"{'/'.join(map(str, r['load_before']))} → {'/'.join(map(str, r['load_after']))} |"
              if avx else f"| {r['name']} | ... | {r['bits_per_char']:.3f} |")


def plot(run_dirs: list[str], out: str, title: str) -> None:
    """Validation bits/char of each run against training tokens seen (left) and against the estimated minutes
    of training the same steps take on the AVX2 machine (right: the budget is 8.5 minutes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_results()
    sp = speeds(records)
    by_name = {r["name"]: r for r in records}
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110, sharey=True)
    for d in run_dirs:
        r = by_name[Path(d).name]
        xs, ys = zip(*r["curve"], strict=True)
        label = f"{r['name']} ({r['params'] / 1e6:.1f}M, final {r['bits_per_char']:.3f})"
        line, = left.plot([x / 1e6 for x in xs], ys, "o-", ms=3, lw=1.3, label=label)
        key = speed_key(r["spec"])
        avx = avx2_tokens_per_s(sp, key, 1) or avx2_tokens_per_s(sp, key, 2)
        if avx:
            right.plot([x / avx / 60 / 0.97 for x in xs], ys, "o-", ms=3, lw=1.3, color=line.get_color(), label=label)
    for ax in (left, right):
        ax.axhline(2.0, color="k", ls="--", lw=0.8)
        ax.grid(alpha=0.3)
        ax.set_ylim(1.95, 2.9)
    right.axvline(8.5, color="r", ls=":", lw=1, label="8.5-min budget")
    left.set_xlabel("training tokens seen (millions)")
    right.set_xlabel("estimated training minutes on the AVX2 machine (fp32, 2 cores)")
    left.set_ylabel("validation bits per character (target 2.0)")
    left.legend(fontsize=6.5)
    right.legend(fontsize=6.5)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        child(argv[1])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("speed")
    p.add_argument("specs", nargs="+", help="shape[+variant...], e.g. d192_v4k+bs16")
    p.add_argument("--precisions", nargs="+", default=["bf16", "no"])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--steps", type=int, default=4, help="timed steps per repetition")
    p.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("run")
    p.add_argument("specs", nargs="+", help="shape[+variant...], e.g. d192_v4k+lr3e3")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--mixed_precision", default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval_every", type=int, default=None)
    p.add_argument("--seed", type=int, default=42)
    sub.add_parser("table")
    p = sub.add_parser("plot")
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", default="docs/pretrain_sweep.png")
    p.add_argument("--title", default="validation bits/char against training tokens (fixed-step runs)")
    args = parser.parse_args(argv)
    if args.cmd == "speed":
        speed_probe(args.specs, args.precisions, args.reps, args.steps, args.threads)
    elif args.cmd == "run":
        for spec in args.specs:
            r = launch(spec, args.steps, "run", args.mixed_precision, args.threads, args.eval_every, args.seed)
            shown = {k: r[k] for k in ("name", "steps", "tokens", "tokens_per_s_median_window", "bits_per_char",
                                       "mixed_precision", "wall_s", "load_before", "load_after")}
            print("RESULT " + json.dumps(shown), flush=True)
        print(cpu_line())
    elif args.cmd == "table":
        print_table(read_results())
    else:
        plot(args.runs, args.out, args.title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
