"""Training throughput: GPTLiteForCausalLM vs transformers' GPT2LMHeadModel, same shapes, same run, each at its
best on the device: the precision ``mixed_precision="auto"`` picks (bf16 autocast on AVX-512-BF16 / AMX CPUs and
CUDA, fp32 elsewhere), fused AdamW and sdpa attention for BOTH (so a ratio measures the implementation, not a
precision or optimizer difference).

One training step = forward with labels (loss), backward, AdamW step, zero_grad. Each variant lives in its own
worker process (so peak memory is per variant) and the workers run in turn, rotating the order every repetition;
the table shows medians over repetitions and the spread (half the inter-quartile range, % of the median).
MFU = 6 * N * tokens/s / peak, with N = every parameter except the position embeddings (the tied token embedding
counted once, as the output layer's matmul) and the attention-score FLOPs not counted; the peak is the best
FLOP/s of a large torch.mm IN THE DTYPE THE RUN USES (bf16 or fp32), measured by this script on this machine.

Threads: 1 by default on CPU (as bench/generate.py; on 2 cores shared with other work a second OpenMP thread waits
at every parallel region: measured 5-6x slower at load average 4-5); --threads 2 on a quiet machine.

    python bench/train_step.py                       # both shapes, CPU defaults (a few minutes)
    python bench/train_step.py --shapes small --reps 9 --markdown
    python bench/train_step.py --precision no        # force fp32 for both (the AVX2 machines' path)
    python bench/train_step.py --variants gpt2,ours,gpt2-compiled,ours-compiled --shapes small
    python bench/train_step.py --profile             # + torch.profiler top ops of one step per variant
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from common import (  # noqa: E402
    auto_precision,
    has_native_bf16,
    load_average,
    machine,
    make_config,
    matmul_peak_flops,
    median,
    pick_device,
    spread_pct,
    sync,
)

VARIANTS = {
    "gpt2": "transformers GPT2LMHeadModel",
    "ours": "GPTLiteForCausalLM",
    "gpt2-compiled": "transformers GPT2LMHeadModel + torch.compile",
    "ours-compiled": "GPTLiteForCausalLM + torch.compile",
}


def build(variant: str, shape: str, device: torch.device):
    from hf_gptlite import GPTLiteForCausalLM

    torch.manual_seed(0)
    config = make_config(shape)
    if variant.startswith("gpt2"):  # the same shape in transformers' own GPT-2, built directly so that no second model
        # inflates this worker's peak RSS (weights do not matter for speed; parity is tested in tests/)
        from transformers import GPT2Config, GPT2LMHeadModel

        model = GPT2LMHeadModel(GPT2Config(
            vocab_size=config.vocab_size, n_positions=config.max_position_embeddings, n_embd=config.hidden_size,
            n_layer=config.num_hidden_layers, n_head=config.num_attention_heads, n_inner=config.intermediate_size,
            activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id))
    else:
        model = GPTLiteForCausalLM(config)
    model.set_attn_implementation("sdpa")
    return model.to(device).train()


def worker(conn, variant: str, shape: str, batch: int, seq: int, device_name: str, threads: int, bf16: bool):
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    model = build(variant, shape, device)
    n_params = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)  # both sides
    compiled = variant.endswith("-compiled")
    forward = torch.compile(model) if compiled else model
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=gen).to(device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = forward(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    t = time.perf_counter()
    for _ in range(2 if compiled else 1):  # compilation / first-touch allocations
        step()
    sync(device)
    conn.send(dict(warmup_s=time.perf_counter() - t, n_params=n_params))
    while True:
        cmd, arg = conn.recv()
        if cmd == "run":
            sync(device)
            t = time.perf_counter()
            for _ in range(arg):
                step()
            sync(device)
            conn.send(time.perf_counter() - t)
        elif cmd == "profile":
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
            with profile(activities=acts) as prof:
                step()
                sync(device)
            key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
            conn.send(prof.key_averages().table(sort_by=key, row_limit=arg))
        else:  # "stop"
            if device.type == "cuda":
                mem = torch.cuda.max_memory_allocated(device) / 2**20
            else:
                mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
            conn.send(mem)
            return


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="small,124m", help="comma list from bench/common.py SHAPES")
    p.add_argument("--variants", default=None, help="default gpt2,ours (+gpt2-compiled,ours-compiled on GPU); "
                   "compiled variants cost minutes of compilation on a 2-core CPU")
    p.add_argument("--precision", default="auto", choices=["auto", "no", "bf16"],
                   help="auto: what mixed_precision=auto picks on this device (the same for both sides)")
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", default=None, help="batch per shape, e.g. 'small=4,124m=2' (default: CPU 4/2, GPU 32/16)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per repetition (default: CPU 4, GPU 20)")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default 1 on CPU: see bench/generate.py)")
    p.add_argument("--profile", action="store_true", help="print torch.profiler's top ops of one step per variant")
    p.add_argument("--markdown", action="store_true", help="print only the README table")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args()
    device = pick_device(args.device)
    gpu = device.type == "cuda"
    args.threads = args.threads or (torch.get_num_threads() if gpu else 1)
    torch.set_num_threads(args.threads)
    batch = {"small": 32 if gpu else 4, "124m": 16 if gpu else 2, "cpu-small": 32 if gpu else 8}
    if args.batch:
        batch.update({k: int(v) for k, v in (kv.split("=") for kv in args.batch.split(","))})
    steps = args.steps or (20 if gpu else 4)
    variants = (args.variants or "gpt2,ours" + (",gpt2-compiled,ours-compiled" if gpu else "")).split(",")
    precision = auto_precision(device) if args.precision == "auto" else args.precision
    if precision == "fp16":  # older CUDA GPUs: compare in fp32 rather than add a grad scaler to both sides
        precision = "no"
    bf16 = precision == "bf16"
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r}; choose from {sorted(VARIANTS)}")
    load_before = load_average()
    peak = matmul_peak_flops(device, n=8192 if gpu else 2048, dtype=torch.bfloat16 if bf16 else torch.float32)
    dtype_name = "bf16" if bf16 else "fp32"
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.markdown else print
    log(f"machine: {machine(device)}; native bf16: {has_native_bf16(device)}; precision {dtype_name} for both; "
        f"{dtype_name} torch.mm peak {peak / 1e9:.1f} GFLOP/s; load avg {load_before}")

    ctx = mp.get_context("spawn")
    rows = []
    for shape in args.shapes.split(","):
        B = batch.get(shape, 4)
        tokens = B * args.seq * steps
        workers = {}
        for v in variants:  # start one at a time so start-up and compile do not overlap
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker, args=(child, v, shape, B, args.seq, str(device), args.threads, bf16))
            proc.start()
            info = parent.recv()
            workers[v] = (proc, parent, info)
            log(f"[{shape}] {v}: ready, warm-up/compile {info['warmup_s']:.1f}s, N={info['n_params'] / 1e6:.1f}M")
        times = {v: [] for v in variants}
        for r in range(args.reps):
            order = variants[r % len(variants):] + variants[: r % len(variants)]  # rotate the order
            for v in order:
                workers[v][1].send(("run", steps))
                times[v].append(workers[v][1].recv())
            log(f"[{shape}] rep {r + 1}/{args.reps}: " + ", ".join(f"{v} {tokens / times[v][-1]:.0f} tok/s" for v in variants))
        if args.profile:
            for v in variants:
                workers[v][1].send(("profile", 15))
                log(f"\n[{shape}] {v}: one step, top ops\n{workers[v][1].recv()}")
        for v in variants:
            proc, conn, info = workers[v]
            conn.send(("stop", None))
            mem = conn.recv()
            proc.join()
            tps = tokens / median(times[v])
            rows.append(dict(shape=shape, variant=v, batch=B, tps=tps, mem=mem, times=times[v],
                             mfu=6 * info["n_params"] * tps / peak, spread=spread_pct(times[v])))
    load_after = load_average()

    mem_name = "peak GPU alloc MiB" if gpu else "peak RSS MiB"
    lines = [
        f"Machine: {machine(device)}; native bf16: {has_native_bf16(device)}; both sides {dtype_name}, fused AdamW, "
        f"sdpa; {dtype_name} `torch.mm` peak measured {peak / 1e9:.1f} GFLOP/s; load average before/after "
        f"{load_before} → {load_after}.",
        f"Context {args.seq}, {steps} steps × {args.reps} repetitions (median; ± = half the inter-quartile range), "
        f"{args.threads} thread(s); `python bench/train_step.py --shapes {args.shapes} --reps {args.reps} "
        f"--precision {args.precision} --variants {','.join(variants)} --threads {args.threads}`",
        "",
        f"| shape | batch | implementation | tokens/s | × GPT-2 (per-rep ratio, median) | MFU ({dtype_name} peak) | {mem_name} |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base_name = "gpt2-compiled" if r["variant"].endswith("-compiled") else "gpt2"
        base = next((x for x in rows if x["shape"] == r["shape"] and x["variant"] == base_name), None)
        if base:  # paired ratio: the same repetition ran both, so the machine's drift cancels
            ratios = [b / t for t, b in zip(r["times"], base["times"])]
            r["ratio"], r["ratio_spread"] = median(ratios), spread_pct(ratios)
            ratio = f"{median(ratios):.2f}× (±{spread_pct(ratios):.1f}%)"
        else:
            ratio = "–"
        lines.append(f"| {r['shape']} | {r['batch']} | {VARIANTS[r['variant']]} | {r['tps']:.0f} ±{r['spread']:.1f}% "
                     f"| {ratio} | {100 * r['mfu']:.0f}% | {r['mem']:.0f} |")
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=machine(device), native_bf16=has_native_bf16(device), precision=dtype_name,
                           peak_flops=peak, load_before=load_before, load_after=load_after, threads=args.threads, seq=args.seq,
                           rows=rows, table="\n".join(lines)), f, indent=1)


if __name__ == "__main__":
    main()
