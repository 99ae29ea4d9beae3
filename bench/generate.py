"""Generation speed: GPTLiteForCausalLM.generate vs GPT2LMHeadModel.generate, same weights, same run, each at its best.

Both sides: the same precision (``--dtype auto``: bf16 weights where the machine has bf16 math — CUDA, a CPU with
AVX-512-BF16 or AMX — else fp32; measured: on AVX-512-BF16 both models decode faster in bf16, on AVX2 bf16 is an
order of magnitude slower), sdpa attention, greedy decoding of a 32-token prompt with the KV cache. Three ways
transformers can run the cache, for both models: ``dynamic`` (DynamicCache, what generate() does by default),
``static`` (cache_implementation="static") and, with ``--compile``, ``static+compiled`` (generate()'s compiled
decoding step, CompileConfig(fullgraph=True); transformers only compiles on accelerators unless told to).

Each repetition runs GPTLite and GPT-2 back to back (alternating who goes first); the table gives median tokens/s
(every sequence of the batch counts), the spread (half the inter-quartile range, % of the median) and the paired
ratio: the median over repetitions of GPT-2's time / GPTLite's time IN THE SAME REPETITION, so drift of a shared
machine cancels. "CPU-time ratio" is the same ratio of process CPU time (one thread: the time the process actually
ran, not the time it waited for a core). TTFT = a generate() call with max_new_tokens=1. The book's loop without a
cache (re-runs the whole context every step) is timed at batch 1, GPTLite only, each run next to a cached
generate() of the same length; "cache ×" is the median of those paired ratios.

Threads: on CPU the default is 1. A decoding step is hundreds of small ops; on 2 cores shared with other work, a
second OpenMP thread waits at every parallel region for a core (measured 3-6x slower at load average 5).

    python bench/generate.py                                 # cpu-small shape, batch 1 and 8, 128 and 512 new tokens
    python bench/generate.py --shape 124m --new-tokens 128 --compile --markdown
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from common import has_native_bf16, load_average, machine, make_config, median, pick_device, spread_pct, sync  # noqa: E402
from transformers import CompileConfig  # noqa: E402

from hf_gptlite import GPTLiteForCausalLM  # noqa: E402


@torch.no_grad()
def generate_no_cache(model, input_ids, max_new_tokens):
    """The book's generate_text_simple: re-run the whole context every step, take the argmax of the last logits."""
    context = model.config.max_position_embeddings
    for _ in range(max_new_tokens):
        logits = model(input_ids=input_ids[:, -context:], use_cache=False).logits[:, -1, :]  # (B, vocab)
        input_ids = torch.cat([input_ids, logits.argmax(dim=-1, keepdim=True)], dim=1)
    return input_ids


def timed(fn, device):
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu, out


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if has_native_bf16(device) else torch.float32
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[name]


def cache_kwargs(mode: str, device: torch.device) -> dict:
    if mode == "dynamic":
        return {}
    if mode == "static":
        return dict(cache_implementation="static", disable_compile=True)
    # transformers' default for compiled decoding is reduce-overhead (CUDA graphs): GPU only
    compiled = CompileConfig(fullgraph=True, mode="reduce-overhead" if device.type == "cuda" else "default")
    compiled._compile_all_devices = True  # transformers only auto-compiles on accelerators otherwise
    return dict(cache_implementation="static", compile_config=compiled)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="cpu-small", help="a shape of bench/common.py SHAPES")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--new-tokens", default="128,512")
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--caches", default="dynamic,static", help="dynamic,static (and static+compiled with --compile)")
    p.add_argument("--compile", action="store_true", help="add static+compiled (compiles once per model and batch)")
    p.add_argument("--no-cache-tokens", default="512", help="new-token counts for the no-cache loop at batch 1 ('')")
    p.add_argument("--no-cache-reps", type=int, default=2, help="no-cache runs, each paired with a cached one")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default 1 on CPU, see above)")
    p.add_argument("--markdown", action="store_true", help="print only the README table")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args()
    device = pick_device(args.device)
    threads = args.threads or (1 if device.type == "cpu" else torch.get_num_threads())
    torch.set_num_threads(threads)
    dtype = pick_dtype(args.dtype, device)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.markdown else print
    load_before = load_average()

    torch.manual_seed(0)
    config = make_config(args.shape)
    ours = GPTLiteForCausalLM(config).eval()
    gpt2 = ours.to_gpt2().eval()
    models = {"ours": ours.to(device, dtype), "gpt2": gpt2.to(device, dtype)}
    for m in models.values():
        m.set_attn_implementation("sdpa")
        m.generation_config.eos_token_id = None  # always generate exactly max_new_tokens
        m.generation_config.pad_token_id = config.pad_token_id
    batches = [int(b) for b in args.batches.split(",")]
    new_tokens = [int(n) for n in args.new_tokens.split(",")]
    caches = args.caches.split(",") + (["static+compiled"] if args.compile else [])
    if args.prompt + max(new_tokens) > config.max_position_embeddings:
        raise SystemExit(f"prompt + new tokens exceed max_position_embeddings={config.max_position_embeddings}")
    gen = torch.Generator().manual_seed(1)
    prompts = {B: torch.randint(3, config.vocab_size, (B, args.prompt), generator=gen).to(device) for B in batches}
    dtype_name = "bf16" if dtype == torch.bfloat16 else "fp32"

    def run(name, B, n, mode):
        ids = prompts[B]
        return timed(lambda: models[name].generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                                   do_sample=False, **cache_kwargs(mode, device)), device)

    log(f"machine: {machine(device)}; native bf16: {has_native_bf16(device)}; {dtype_name} weights for both; "
        f"shape {args.shape}; load avg {load_before}")
    rows = []
    for mode in caches:
        for B in batches:
            first = {name: run(name, B, 8, mode) for name in models}  # warm-up (compilation for static+compiled)
            if mode == "static+compiled":
                log(f"[{mode}] batch {B}: first call (compiles) GPTLite {first['ours'][0]:.1f}s, "
                    f"GPT-2 {first['gpt2'][0]:.1f}s")
            ttft = {name: [] for name in models}
            for r in range(args.reps if mode == "dynamic" else 0):
                for name in (("ours", "gpt2") if r % 2 == 0 else ("gpt2", "ours")):
                    ttft[name].append(run(name, B, 1, mode)[0])
            for n in new_tokens:
                if mode != "dynamic":  # a static cache of another length is another graph: compile it untimed
                    for name in models:
                        run(name, B, n, mode)
                wall, cpu, outs = {name: [] for name in models}, {name: [] for name in models}, {}
                for r in range(args.reps):
                    for name in (("ours", "gpt2") if r % 2 == 0 else ("gpt2", "ours")):
                        w, c, out = run(name, B, n, mode)
                        wall[name].append(w)
                        cpu[name].append(c)
                        outs[name] = out
                ratios = [g / o for o, g in zip(wall["ours"], wall["gpt2"])]
                cpu_ratios = [g / o for o, g in zip(cpu["ours"], cpu["gpt2"])]
                new = outs["ours"][:, args.prompt:]
                row = dict(mode=mode, B=B, n=n, ratio=median(ratios), ratio_spread=spread_pct(ratios),
                           cpu_ratio=median(cpu_ratios), same=(new == outs["gpt2"][:, args.prompt:]).float().mean().item(),
                           ttft={k: median(v) for k, v in ttft.items()} if ttft["ours"] else None, nocache=None,
                           **{name: B * n / median(wall[name]) for name in models},
                           **{f"{name}_spread": spread_pct(wall[name]) for name in models})
                if mode == "dynamic" and B == 1 and str(n) in args.no_cache_tokens.split(","):
                    loop, cached = [], []  # paired again: each no-cache run next to a cached one
                    for _ in range(args.no_cache_reps):
                        loop.append(timed(lambda n=n: generate_no_cache(models["ours"], prompts[1], n), device))
                        cached.append(run("ours", B, n, mode))
                    row["nocache"] = n / median([w for w, _, _ in loop])
                    row["nocache_ratio"] = median([w / c[0] for (w, _, _), c in zip(loop, cached)])
                    row["nocache_cpu_ratio"] = median([c / cc[1] for (_, c, _), cc in zip(loop, cached)])
                    row["nocache_same"] = (loop[0][2][:, args.prompt:] == new).float().mean().item()
                log(f"[{mode}] batch {B}, {n} new: GPTLite {row['ours']:.1f} tok/s ±{row['ours_spread']:.1f}%, "
                    f"GPT-2 {row['gpt2']:.1f} ±{row['gpt2_spread']:.1f}%, paired ratio {row['ratio']:.2f}x "
                    f"±{row['ratio_spread']:.1f}% (CPU time {row['cpu_ratio']:.2f}x), same tokens {row['same']:.0%}"
                    + (f", no-cache loop {row['nocache']:.1f} tok/s (cache {row['nocache_ratio']:.1f}x faster, CPU "
                       f"time {row['nocache_cpu_ratio']:.1f}x; same tokens {row['nocache_same']:.0%})"
                       if row["nocache"] else "") + f"; load {load_average()}")
                rows.append(row)
    load_after = load_average()

    lines = [
        f"Machine: {machine(device)}; native bf16: {has_native_bf16(device)}; both models in {dtype_name}, sdpa; shape "
        f"`{args.shape}` ({config.num_hidden_layers} layers, {config.hidden_size} wide, vocab {config.vocab_size}); "
        f"greedy, {args.prompt}-token prompt; {args.reps} repetitions (median, ± = half the IQR); load average "
        f"{load_before} → {load_after}.",
        f"`python bench/generate.py --shape {args.shape} --batches {args.batches} --new-tokens {args.new_tokens} "
        f"--reps {args.reps} --dtype {args.dtype} --threads {threads}{' --compile' if args.compile else ''}`",
        "",
        "| cache | batch | new tokens | GPTLite tok/s | GPT-2 tok/s | × GPT-2 (paired) | × GPT-2 (CPU time) "
        "| same greedy tokens | TTFT GPTLite / GPT-2 (ms) | no-cache loop tok/s (cache ×, paired) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ttft = f"{1e3 * r['ttft']['ours']:.1f} / {1e3 * r['ttft']['gpt2']:.1f}" if r["ttft"] else "–"
        nc = f"{r['nocache']:.1f} ({r['nocache_ratio']:.1f}×, CPU time {r['nocache_cpu_ratio']:.1f}×)" if r["nocache"] else "–"
        cpu_ratio = f"{r['cpu_ratio']:.2f}×" if device.type == "cpu" else "–"  # CPU time means nothing on a GPU
        lines.append(f"| {r['mode']} | {r['B']} | {r['n']} | {r['ours']:.1f} ±{r['ours_spread']:.0f}% | "
                     f"{r['gpt2']:.1f} ±{r['gpt2_spread']:.0f}% | **{r['ratio']:.2f}×** ±{r['ratio_spread']:.0f}% | "
                     f"{cpu_ratio} | {r['same']:.0%} | {ttft} | {nc} |")
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=machine(device), native_bf16=has_native_bf16(device), dtype=dtype_name,
                           shape=args.shape, load_before=load_before, load_after=load_after, threads=threads,
                           rows=rows, table="\n".join(lines)), f, indent=1)


if __name__ == "__main__":
    main()
