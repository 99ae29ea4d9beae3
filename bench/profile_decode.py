"""Where a cached decoding step's time goes, GPTLite vs GPT-2: per-token overhead (Python, framework, dispatch) vs
kernels, and torch.profiler's split of the ATen time.

A decoding step as generate() runs it: one new token per sequence, the attention mask grown by one column, the
model called with the cache and logits_to_keep=1, then the argmax of the fp32 logits. After a 32-token prompt and
warm-up, ``--steps`` steps are timed in process CPU time (on a shared machine wall time also counts the waits for a
core; one thread). Each model has an "overhead twin": the same depth, heads of the same count of ops but 32 wide with
a 64-token vocabulary, so its step is next to no arithmetic and its time is the per-token overhead (module calls,
decorators, cache bookkeeping, output objects, op dispatch). kernels = step - overhead. torch.profiler then splits
the ATen self time of the real step into matmuls (projections, output layer), attention, cache writes and the rest
(shares of the ATen time: the profiler itself adds microseconds to every op, so its absolute Python/ATen split
says little at this scale). Models alternate, ``--reps`` times; medians.

    python bench/profile_decode.py --shape cpu-small --batch 1
    python bench/profile_decode.py --shape 124m --batch 8 --steps 16 --top 15
    python bench/profile_decode.py --static --compile --shape cpu-small      # generate()'s compiled decoding step
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from common import has_native_bf16, load_average, machine, make_config, median  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from transformers import DynamicCache, StaticCache  # noqa: E402

from hf_gptlite import GPTLiteForCausalLM  # noqa: E402

GROUPS = {  # ATen op name -> column
    "matmul": ("aten::addmm", "aten::mm", "aten::mv", "aten::addmv", "aten::linear", "aten::_mkldnn", "mkldnn"),
    # a decoding step's only batched matmuls are attention's (GPTLite's one_query_attention: q k^T and weights v)
    "attention": ("aten::_scaled_dot_product", "aten::scaled_dot_product", "aten::bmm", "aten::matmul",
                  "aten::_softmax"),
    "cache": ("aten::cat", "aten::copy_", "aten::index_copy", "aten::index_put"),
}


def group_of(name: str) -> str:
    for group, prefixes in GROUPS.items():
        if name.startswith(prefixes):
            return group
    return "other"


def pick_dtype(name: str) -> torch.dtype:
    if name == "auto":  # what the benches use: bf16 weights where the CPU has bf16 math, else fp32
        return torch.bfloat16 if has_native_bf16(torch.device("cpu")) else torch.float32
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[name]


def decode_steps(model, prompt, n_steps, static: bool, compiled):
    """-> (prefill, run): ``prefill()`` fills the cache with the prompt, ``run()`` then runs ``n_steps`` decoding
    steps (a static cache is reset and refilled, a dynamic one cropped back, so both can be repeated)."""
    B, P = prompt.shape
    cache = StaticCache(config=model.config, max_cache_len=P + n_steps) if static else DynamicCache(config=model.config)
    forward = compiled or model
    state = {}

    @torch.no_grad()
    def prefill():
        if not static and cache.get_seq_length():  # filled before: drop the decoded positions
            cache.crop(P - cache.get_seq_length())
            return
        if static:
            cache.reset()
        out = model(prompt, attention_mask=torch.ones_like(prompt), cache=cache, use_cache=True, logits_to_keep=1)
        state["first"] = out.logits[:, -1:].float().argmax(-1)

    @torch.no_grad()
    def run():
        token, mask = state["first"], torch.ones(B, P, dtype=torch.long)
        for _ in range(n_steps):
            if static:  # the mask comes from the cache: a fixed-shape graph, as generate()'s compiled decoding
                out = forward(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)
            else:  # as generate(): the 2D mask grows by one column per step
                mask = torch.cat([mask, mask.new_ones(B, 1)], 1)
                out = forward(input_ids=token, attention_mask=mask, cache=cache, use_cache=True, logits_to_keep=1)
            token = out.logits[:, -1:].float().argmax(-1)  # generate() takes fp32 logits
        return token

    return prefill, run


def build(shape: str, dtype, batch: int, steps: int, static: bool, compile_: bool, **overrides):
    torch.manual_seed(0)
    config = make_config(shape, **overrides)
    ours = GPTLiteForCausalLM(config).eval()
    prompt = torch.randint(3, config.vocab_size, (batch, 32), generator=torch.Generator().manual_seed(1))
    runners = {}
    for name, model in (("ours", ours), ("gpt2", ours.to_gpt2().eval())):
        model.to(dtype).set_attn_implementation("sdpa")
        compiled = torch.compile(model.forward, fullgraph=True) if compile_ else None
        runners[name] = decode_steps(model, prompt, steps, static, compiled)
        for _ in range(2):  # warm-up (and compilation)
            runners[name][0]()
            runners[name][1]()
    return config, runners


def cpu_seconds(prefill, run) -> float:
    prefill()
    t = time.process_time()
    run()
    return time.process_time() - t


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="cpu-small")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--static", action="store_true", help="StaticCache instead of DynamicCache")
    p.add_argument("--compile", action="store_true", help="torch.compile(fullgraph=True) the step (needs --static)")
    p.add_argument("--top", type=int, default=0, help="also print the top ATen ops of each model")
    args = p.parse_args()
    if args.compile and not args.static:
        raise SystemExit("--compile needs --static (a DynamicCache step is not a fixed-shape graph)")
    torch.set_num_threads(args.threads)
    dtype = pick_dtype(args.dtype)
    kw = dict(dtype=dtype, batch=args.batch, steps=args.steps, static=args.static, compile_=args.compile)
    config, real = build(args.shape, **kw)
    _, twin = build(args.shape, hidden_size=32, num_attention_heads=2, vocab_size=64, **kw)  # same depth, ~no math
    load_before = load_average()
    print(f"machine: {machine(torch.device('cpu'))}; native bf16 {has_native_bf16(torch.device('cpu'))}; "
          f"shape {args.shape} ({config.num_hidden_layers} layers, {config.hidden_size} wide), batch {args.batch}, "
          f"{str(dtype)[6:]} weights, {'static' if args.static else 'dynamic'} cache"
          f"{', compiled step' if args.compile else ''}; {args.steps} steps, median of {args.reps}; "
          f"load avg {load_before}")
    names = ["ours", "gpt2"]
    samples = {name: [] for name in names}
    for r in range(args.reps):  # the models alternate, so both see the same machine
        for name in (names if r % 2 == 0 else names[::-1]):
            step, overhead = cpu_seconds(*real[name]), cpu_seconds(*twin[name])
            real[name][0]()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                real[name][1]()
            groups = {}
            for e in prof.key_averages():
                if e.key.startswith("aten::"):
                    groups[group_of(e.key)] = groups.get(group_of(e.key), 0.0) + e.self_cpu_time_total
            aten = sum(groups.values())
            samples[name].append(dict(step=step, overhead=overhead, **{g: v / aten for g, v in groups.items()}))
            if args.top and r == 0:
                print(f"\n{name}: top ATen ops over {args.steps} steps")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))

    def med(name, key, scale=1.0):
        return scale * median([x.get(key, 0.0) for x in samples[name]])

    per_step = 1e3 / args.steps
    print(f"\nper decoding step, ms of CPU time (medians); load avg {load_before} -> {load_average()}")
    print("| model | step | per-token overhead (32-wide twin) | kernels (step - overhead) "
          "| profiled ATen time: matmul / attention / cache writes / other |")
    print("|---|---|---|---|---|")
    for name in names:
        step, overhead = med(name, "step", per_step), med(name, "overhead", per_step)
        shares = " / ".join(f"{100 * med(name, g):.0f}%" for g in (*GROUPS, "other"))
        print(f"| {'GPTLite' if name == 'ours' else 'GPT-2'} | {step:.2f} | {overhead:.2f} ({100 * overhead / step:.0f}%) "
              f"| {step - overhead:.2f} | {shares} |")
    for key, what in (("step", "step"), ("overhead", "overhead")):
        ratios = [g[key] / o[key] for o, g in zip(samples["ours"], samples["gpt2"])]
        print(f"GPT-2 / GPTLite {what}, same repetition: median {median(ratios):.2f}x "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
