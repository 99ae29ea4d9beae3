"""Which of gptlite_kernels' fast paths pay on THIS CPU: each one off against all on, in one process, alternating,
paired per repetition (time with the path off ÷ time with all on; > 1: the path pays).

    python bench/fast_paths.py                 # ~5-10 minutes on a 2-core CPU, 1 thread
    python bench/fast_paths.py --quick         # tests the script

Generation: greedy generate() of a random model (dynamic cache, the default), batch 1 and 8, for the paths that act
when decoding (cache, mask, head, attention). Training: one forward + backward of the loss at the benchmark's
`small` shape (loss). The dtype is what bench/generate.py's `--dtype auto` picks (bf16 only with native bf16 math).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import has_native_bf16, make_config  # noqa: E402
from cpu import cpu_line  # noqa: E402

from hf_gptlite import GPTLiteForCausalLM  # noqa: E402
from hf_gptlite.gptlite_kernels import FAST_PATHS, set_fast_paths  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paired(fns: dict, reps: int) -> dict:
    """{name: [seconds per rep]}, the functions alternating within each repetition (after one warm-up round)."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return times


def with_paths(names: str, fn):
    def run():
        set_fast_paths(names)
        try:
            fn()
        finally:
            set_fast_paths("all")
    return run


def report(label: str, times: dict, base: str = "all on") -> None:
    for name, ts in times.items():
        ratios = sorted(a / b for a, b in zip(ts, times[base]))
        q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
        print(f"| {label} | {name} | {statistics.median(ts) * 1e3:.1f} | {statistics.median(ratios):.3f}× "
              f"(IQR {q1:.3f}–{q3:.3f}) |", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--shapes", default="cpu-small,124m")
    args = p.parse_args()
    torch.set_num_threads(1)
    device = torch.device("cpu")
    dtype = torch.bfloat16 if has_native_bf16(device) else torch.float32
    reps, new_tokens = (2, 8) if args.quick else (args.reps, 64)
    print(cpu_line())
    print(f"dtype {dtype}, 1 thread, {reps} repetitions (median; ratio = time with the path off / all on, paired)")
    print("\n| workload | variant | ms (median) | off ÷ all on |\n|---|---|---|---|")
    torch.manual_seed(0)
    for shape in args.shapes.split(","):
        model = GPTLiteForCausalLM(make_config(shape)).eval().to(dtype)
        for batch in (1, 8):
            if shape == "124m" and args.quick:
                continue
            prompt = torch.randint(3, model.config.vocab_size, (batch, 32))

            def gen(model=model, prompt=prompt):
                with torch.no_grad():
                    model.generate(prompt, max_new_tokens=new_tokens, do_sample=False, min_new_tokens=new_tokens)

            variants = {"all on": gen, **{f"{n} off": with_paths(",".join(set(FAST_PATHS) - {n}), gen)
                                          for n in ("cache", "mask", "head", "attention")},
                        "all off": with_paths("none", gen)}
            report(f"generate {shape}, batch {batch}, {new_tokens} new tokens", paired(variants, reps))
    model = GPTLiteForCausalLM(make_config("small")).train()
    x = torch.randint(3, 8192, (2 if args.quick else 4, 64 if args.quick else 256))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = model(x, labels=x).loss
        loss.backward()

    report(f"train step `small`, batch {x.shape[0]} x {x.shape[1]}",
           paired({"all on": step, "loss off": with_paths(",".join(set(FAST_PATHS) - {"loss"}), step)}, reps))
    print(cpu_line())


if __name__ == "__main__":
    main()
