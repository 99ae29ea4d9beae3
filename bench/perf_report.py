"""Regenerate the performance block of docs/performance.md in one command: run the benchmarks, judge the targets,
write it.

    python bench/perf_report.py            # print the block (about 30 minutes on a 2-core CPU)
    python bench/perf_report.py --write    # ... and replace it in docs/performance.md (between the perf-report
                                           # markers) and the two performance rows of README.md's results
    python bench/perf_report.py --quick    # a few minutes, tiny settings: to test this script

It runs, each in its own process: bench/train_step.py (both shapes), bench/generate.py (cpu-small: batch 1 and 8,
128 and 512 new tokens, dynamic / static / compiled caches, the no-cache loop; 124M: batch 1 and 8, 128 new
tokens) and bench/profile_decode.py (a decoding step, cpu-small and 124M, batch 1), then writes: the machine (lscpu
model name, AVX-512-BF16 yes/no), the load average around every run, the targets with the measured paired ratio
and its distance to the target, and the tables. Targets are judged on the default cache (generate()'s dynamic one)
and the wall-clock paired ratio; the CPU-time ratio is in the tables next to it. --write also rewrites the two
performance rows of README.md's "Results at a glance".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cpu import cpu_flag, cpu_name  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
START, END = "<!-- perf-report:start -->", "<!-- perf-report:end -->"
TRAIN_TARGET, GEN_TARGET = 1.1, {1: 1.2, 8: 1.3}
NO_CACHE_TARGET = 10.0


def run(script: str, *args: str, log) -> tuple[dict | None, str]:
    """Run bench/<script> with --json; -> (its JSON, its stdout)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    json_args = ["--json", path] if script != "profile_decode.py" else []
    cmd = [sys.executable, str(BENCH / script), *args, *json_args]
    log(f"$ {' '.join(cmd[1:])}")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    if proc.returncode:
        raise SystemExit(f"{script} failed:\n{proc.stderr[-3000:]}")
    data = json.load(open(path)) if json_args else None
    os.unlink(path)
    return data, proc.stdout


def verdict(got: float, target: float) -> str:
    if got >= target:
        return f"**met** ({got:.2f}× ≥ {target}×)"
    return f"**missed by {target - got:.2f}** ({got:.2f}× < {target}×)"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true", help="replace the block in docs/performance.md and README's rows")
    p.add_argument("--quick", action="store_true", help="tiny settings (tests the script, measures nothing)")
    p.add_argument("--no-compile", action="store_true", help="skip the compiled-decoding rows (saves ~5 minutes)")
    args = p.parse_args()
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    compile_flag = [] if args.no_compile else ["--compile"]
    if args.quick:
        train = ["--shapes", "cpu-small", "--reps", "2", "--steps", "1", "--seq", "64"]
        small = ["--shape", "cpu-small", "--batches", "1,8", "--new-tokens", "16", "--reps", "2",
                 "--no-cache-tokens", "16", "--no-cache-reps", "1"]
        big = ["--shape", "small", "--batches", "1,8", "--new-tokens", "8", "--reps", "2", "--no-cache-tokens", ""]
        profiles = [["--shape", "cpu-small", "--steps", "8", "--reps", "2"]]
        compile_flag = []
    else:
        train = ["--shapes", "small,124m", "--reps", "7"]
        small = ["--shape", "cpu-small", "--batches", "1,8", "--new-tokens", "128,512", "--reps", "7"]
        big = ["--shape", "124m", "--batches", "1,8", "--new-tokens", "128", "--reps", "5", "--no-cache-tokens", ""]
        profiles = [["--shape", "cpu-small", "--steps", "128"], ["--shape", "124m", "--steps", "16", "--reps", "5"],
                    ["--shape", "124m", "--batch", "8", "--steps", "16", "--reps", "5"]]

    tr, _ = run("train_step.py", *train, log=log)
    g_small, _ = run("generate.py", *small, *compile_flag, log=log)
    g_big, _ = run("generate.py", *big, *compile_flag, log=log)
    prof_out = [run("profile_decode.py", *a, log=log)[1] for a in profiles]

    # ---- targets --------------------------------------------------------------------------------------------------
    targets = []
    for r in tr["rows"]:
        if r["variant"] == "ours":
            targets.append((f"training step, `{r['shape']}` (ctx {tr['seq']}, batch {r['batch']})", r["ratio"],
                            r["ratio_spread"], TRAIN_TARGET))
    for g in (g_small, g_big):
        for r in g["rows"]:
            if r["mode"] == "dynamic" and r["B"] in GEN_TARGET:
                targets.append((f"cached generation, `{g['shape']}`, batch {r['B']}, {r['n']} new tokens",
                                r["ratio"], r["ratio_spread"], GEN_TARGET[r["B"]]))
    nocache = [r for r in g_small["rows"] if r.get("nocache")]

    lines = [
        START,
        f"_Written by `python bench/perf_report.py --write`{' (--quick: NOT a measurement)' if args.quick else ''};"
        " edit the script, not this block._",
        "",
        f"**Machine**: `lscpu` model name \"{cpu_name()}\", {os.cpu_count()} CPUs, AVX-512-BF16: "
        f"{cpu_flag('avx512_bf16')}, AMX: {cpu_flag('amx_bf16')}; torch {_version('torch')}, transformers "
        f"{_version('transformers')}. Both sides run in {tr['precision']} (what `mixed_precision=\"auto\"` picks here; "
        f"generation: {g_small['dtype']} weights), sdpa, {tr['threads']} thread. Load average "
        f"(1/5/15 min; 1.0 is the benchmark itself on an otherwise idle machine) training {tr['load_before']} → {tr['load_after']}, generation cpu-small "
        f"{g_small['load_before']} → {g_small['load_after']}, 124M {g_big['load_before']} → {g_big['load_after']}.",
        "",
        "**GPU**: not measured — no GPU machine was lent to this session. On one, `bash bench/gpu_check.sh` "
        "(≤ 5 minutes; installs the project if needed) prints the training and generation tables for this row.",
        "",
        "| target (paired ratio vs GPT-2, median over repetitions) | measured | ± spread | verdict |",
        "|---|---|---|---|",
    ]
    for name, got, spread, target in targets:
        lines.append(f"| {name} ≥ {target}× | {got:.2f}× | ±{spread:.0f}% | {verdict(got, target)} |")
    for r in nocache:
        lines.append(f"| cached generate() vs the no-cache loop, `{g_small['shape']}`, batch 1, {r['n']} new tokens "
                     f"≥ {NO_CACHE_TARGET:.0f}× | {r['nocache_ratio']:.1f}× (CPU time {r['nocache_cpu_ratio']:.1f}×) | "
                     f"– | {verdict(r['nocache_ratio'], NO_CACHE_TARGET)} |")
    lines += ["", "#### Training step", "", tr["table"], "", "#### Generation, `cpu-small`", "", g_small["table"], "",
              "#### Generation, 124M", "", g_big["table"], "", "#### One decoding step, profiled", ""]
    for out in prof_out:
        lines += ["```", *[x for x in out.strip().splitlines() if x.strip()], "```", ""]
    lines.append(END)
    block = "\n".join(lines)
    print(block)

    # the two rows of "Results at a glance"
    def gen_ratios(B):
        return " / ".join(", ".join(f"{r['ratio']:.2f}×" for r in g["rows"] if r["mode"] == "dynamic" and r["B"] == B)
                          for g in (g_small, g_big))

    def gen_verdicts(B):
        got = [r["ratio"] for g in (g_small, g_big) for r in g["rows"] if r["mode"] == "dynamic" and r["B"] == B]
        return "met" if min(got) >= GEN_TARGET[B] else f"**missed** (lowest {min(got):.2f}×)"

    ours_train = [r for r in tr["rows"] if r["variant"] == "ours"]
    train_ratios = " / ".join(f"{r['ratio']:.2f}×" for r in ours_train)
    train_mfu = " / ".join(f"{100 * r['mfu']:.0f}%" for r in ours_train)
    train_verdicts = " / ".join("met" if r["ratio"] >= TRAIN_TARGET else f"**missed by {TRAIN_TARGET - r['ratio']:.2f}**"
                                for r in ours_train)
    nocache_ratios = ", ".join(f"{r['nocache_ratio']:.1f}×" for r in nocache) or "–"
    nocache_verdicts = ", ".join("met" if r["nocache_ratio"] >= NO_CACHE_TARGET
                                 else f"**missed by {NO_CACHE_TARGET - r['nocache_ratio']:.1f}**" for r in nocache) or "–"
    glance = {
        "| training step vs `GPT2LMHeadModel`":
            f"| training step vs `GPT2LMHeadModel`, same precision ({tr['precision']}), fused AdamW, sdpa "
            f"({' / '.join(r['shape'] for r in ours_train)}, ctx {tr['seq']}) | `python bench/perf_report.py` | "
            f"{train_ratios}; MFU {train_mfu} of the measured {tr['precision']} peak | ≥ 1.1× — {train_verdicts} |",
        "| cached generation vs `GPT2LMHeadModel.generate`":
            f"| cached generation vs `GPT2LMHeadModel.generate`, both {g_small['dtype']}, sdpa, generate()'s cache "
            f"({g_small['shape']} 128, 512 new tokens / {g_big['shape']} 128) | `python bench/perf_report.py` | "
            f"batch 1: {gen_ratios(1)}; batch 8: {gen_ratios(8)}; cache vs no-cache loop at 512 tokens: "
            f"{nocache_ratios} | ≥ 1.2× batch 1: {gen_verdicts(1)}; ≥ 1.3× batch 8: {gen_verdicts(8)}; "
            f"≥ 10×: {nocache_verdicts} |",
    }
    for row in glance.values():
        print(row)
    if args.write:
        page = REPO / "docs" / "performance.md"
        text = page.read_text()
        if START not in text or END not in text:
            raise SystemExit(f"docs/performance.md has no {START} ... {END} block")
        head, rest = text.split(START, 1)
        page.write_text(head + block + rest.split(END, 1)[1])
        readme = REPO / "README.md"
        lines = readme.read_text().splitlines()
        for prefix, row in glance.items():
            lines = [row if line.startswith(prefix) else line for line in lines]
        readme.write_text("\n".join(lines) + "\n")
        log("docs/performance.md and README.md updated")


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except ImportError:
        return "missing"


if __name__ == "__main__":
    main()
