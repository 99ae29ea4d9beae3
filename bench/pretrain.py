"""Benchmark of the main job: the default CPU pretraining run, measured.

    python bench/pretrain.py                          # run `gptlite-main` (about 10 minutes), then report
    python bench/pretrain.py --run_dir runs/pretrain_pt   # report an existing run from its files

Prints wall time, training throughput (overall and the median of the logged windows), the final validation
loss, perplexity and bits per character, next to the issue's target (<= 2.0 bits/char in ~10 minutes on
2 cores). The machine's load average is printed before and after: other work on a shared CPU slows the run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu import cpu_line, load_average  # noqa: E402

TARGET_BITS_PER_CHAR = 2.0
TARGET_MINUTES = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", help="report this finished run instead of training")
    parser.add_argument("--output_dir", default="runs/bench_pretrain", help="where the benchmark run goes")
    parser.add_argument("extra", nargs="*", help="extra flags for gptlite-main (after --)")
    args = parser.parse_args()

    wall = None
    if args.run_dir:
        run = Path(args.run_dir)
    else:
        run = Path(args.output_dir)
        print(f"load average before: {load_average()}", flush=True)
        cmd = [sys.executable, "-m", "hf_gptlite", "main", "--output_dir", str(run), "--overwrite_output_dir", *args.extra]
        print("running:", " ".join(cmd), flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - start
        print(f"load average after:  {load_average()}")

    metrics = json.loads((run / "metrics.json").read_text())
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    windows = [r["tokens_per_s"] for r in log if "tokens_per_s" in r]
    bpc = metrics.get("eval_bits_per_char")
    rows = [
        ("end-to-end wall time (command)", f"{wall / 60:.2f} min" if wall else "n/a (not run here)"),
        ("training loop time", f"{metrics['train_runtime_s'] / 60:.2f} min (target: whole job ~{TARGET_MINUTES:.0f} min)"),
        ("optimizer steps", f"{metrics['global_step']}"),
        ("training tokens", f"{metrics['train_tokens']:,}"),
        ("tokens/s (overall)", f"{metrics['tokens_per_s']:,.0f}"),
        ("tokens/s (median of windows)", f"{statistics.median(windows):,.0f}" if windows else "n/a"),
        ("parameters", f"{metrics['num_parameters'] / 1e6:.2f}M"),
        ("validation loss (nats/token)", f"{metrics['eval_loss']:.4f}"),
        ("validation perplexity", f"{metrics['eval_perplexity']:.2f}"),
        ("validation bits/char", f"{bpc:.4f}" if bpc is not None else "n/a"),
        ("target bits/char", f"<= {TARGET_BITS_PER_CHAR}" + (
            f" -> {'met' if bpc <= TARGET_BITS_PER_CHAR else f'missed by {bpc - TARGET_BITS_PER_CHAR:.3f}'}"
            if bpc is not None else "")),
        ("bits/char vs target (ratio)", f"{bpc / TARGET_BITS_PER_CHAR:.3f}" if bpc is not None else "n/a"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"\npretraining benchmark: {run}\n{cpu_line()}")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    if "sample" in metrics:
        print(f"\nsample: {metrics['sample']!r}")


if __name__ == "__main__":
    main()
