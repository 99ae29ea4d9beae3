"""An older commit's model against this tree's, in one process: the same weights, alternating within each
repetition, paired ratios (old time ÷ new time; > 1: this tree is faster), and whether the results are the same.

    python bench/before_after.py --old 861d07b            # the package at that commit, imported as hf_gptlite_old
    python bench/before_after.py --old 861d07b --reps 3 --shape cpu-small
    python bench/before_after.py --old 861d07b --dtype bf16   # precision forced (both sides alike)

Training: forward + backward of the loss (4 x 256 tokens). Generation: greedy generate() of 64 new tokens, batch 1
and 8. `--dtype auto` (the default) picks bf16 only with native bf16 math, as elsewhere; `fp32` / `bf16` force it
(training under bf16 autocast, generation with bf16 weights). 1 thread.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAPES, has_native_bf16  # noqa: E402
from cpu import cpu_line  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def import_old(rev: str, into: Path):
    """The package at `rev`, unpacked as `hf_gptlite_old` and imported."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "hf_gptlite"], capture_output=True, check=True)
    tarfile.open(fileobj=io.BytesIO(archive.stdout)).extractall(into, filter="data")
    (into / "hf_gptlite").rename(into / "hf_gptlite_old")
    sys.path.insert(0, str(into))
    import hf_gptlite_old

    return hf_gptlite_old


def ratios(pair, reps):
    """pair() -> (old seconds, new seconds, same result); -> (median, min, max, all same)."""
    pair()
    runs = [pair() for _ in range(reps)]
    r = [a / b for a, b, _ in runs]
    return statistics.median(r), min(r), max(r), all(same for _, _, same in runs)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help="a git revision of this repository")
    p.add_argument("--shape", default="small", help="a shape of bench/common.py SHAPES")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto")
    args = p.parse_args()
    torch.set_num_threads(1)
    import hf_gptlite

    with tempfile.TemporaryDirectory() as tmp:
        old_pkg = import_old(args.old, Path(tmp))
        native = has_native_bf16(torch.device("cpu"))
        dtype = torch.bfloat16 if args.dtype == "bf16" or (args.dtype == "auto" and native) else torch.float32
        shape = dict(SHAPES[args.shape], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        torch.manual_seed(0)
        new = hf_gptlite.GPTLiteForCausalLM(hf_gptlite.GPTLiteConfig(**shape))
        old = old_pkg.GPTLiteForCausalLM(old_pkg.GPTLiteConfig(**shape))
        old.load_state_dict(new.state_dict())
        print(cpu_line())
        print(f"old {args.old} vs this tree, shape {args.shape}, {dtype} (--dtype {args.dtype}; native bf16 math: {native}), "
              f"1 thread, {args.reps} repetitions")
        x = torch.randint(3, shape["vocab_size"], (4, 256))

        def train_pair():
            times, losses = [], []
            for m in (old, new):
                m.train()
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                    loss = m(input_ids=x, labels=x).loss
                loss.backward()
                m.zero_grad(set_to_none=True)
                times.append(time.perf_counter() - start)
                losses.append(loss.item())
            return times[0], times[1], losses[0] == losses[1]

        med, lo, hi, same = ratios(train_pair, args.reps)
        print(f"| training forward + backward, 4 x 256 | {med:.3f} | {lo:.3f} – {hi:.3f} | same loss: {same} |")
        for m in (old, new):
            m.eval().to(dtype)
        for batch in (1, 8):
            ids = torch.randint(3, shape["vocab_size"], (batch, 32), generator=torch.Generator().manual_seed(batch))

            def gen_pair(ids=ids):
                times, outs = [], []
                for m in (old, new):
                    start = time.perf_counter()
                    with torch.no_grad():
                        outs.append(m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=64,
                                               min_new_tokens=64, do_sample=False, pad_token_id=2))
                    times.append(time.perf_counter() - start)
                return times[0], times[1], torch.equal(*outs)

            med, lo, hi, same = ratios(gen_pair, args.reps)
            print(f"| generate, batch {batch}, 64 new tokens | {med:.3f} | {lo:.3f} – {hi:.3f} | same tokens: {same} |")
        print(cpu_line())


if __name__ == "__main__":
    main()
