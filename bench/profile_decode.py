"""Where a cached decoding step's time goes: Python (and framework) time vs ATen op time, GPTLite vs GPT-2.

A decoding step as generate() runs it: one new token per sequence, the attention mask grown by one column, the
model called with the cache and logits_to_keep=1, then an argmax. After a 32-token prompt and a few warm-up steps,
``--steps`` steps are timed without the profiler (process CPU time: on a shared machine wall time also counts the
waits for a core; one thread) and then profiled with torch.profiler; the models alternate, ``--reps`` times, and the
table gives medians.
Reported per step: that CPU time; then, in the profiled run (wall clock, as the profiler's op times), Python and
framework = its time - the self time of every ATen op (module calls, decorators, cache bookkeeping, output objects:
everything that is not an op) and the ATen time (kernels + dispatch) split into matmuls (projections, output
layer), attention, cache writes and the rest. The profiler adds a few microseconds per op to both sides. With ``--compile`` (static cache), the step is
torch.compile(fullgraph=True)'d as generate()'s compiled decoding does; inductor's fused kernels are not ATen ops,
so they land in the "not ATen" column there.

    python bench/profile_decode.py --shape cpu-small --batch 1
    python bench/profile_decode.py --shape 124m --batch 8 --dtype bf16 --steps 16
    python bench/profile_decode.py --static --compile --shape cpu-small
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
    return "other ops"


def pick_dtype(name: str) -> torch.dtype:
    if name == "auto":  # what the benches use: bf16 weights where the CPU/GPU has bf16 math, else fp32
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
        state["first"] = out.logits[:, -1:].argmax(-1)

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
    p.add_argument("--models", default="ours,gpt2")
    args = p.parse_args()
    if args.compile and not args.static:
        raise SystemExit("--compile needs --static (a DynamicCache step is not a fixed-shape graph)")
    torch.set_num_threads(args.threads)
    dtype = pick_dtype(args.dtype)
    torch.manual_seed(0)
    config = make_config(args.shape)
    ours = GPTLiteForCausalLM(config).eval()
    models = {"ours": ours, "gpt2": ours.to_gpt2().eval()}
    prompt = torch.randint(3, config.vocab_size, (args.batch, 32), generator=torch.Generator().manual_seed(1))
    load_before = load_average()
    print(f"machine: {machine(torch.device('cpu'))}; native bf16 {has_native_bf16(torch.device('cpu'))}; "
          f"shape {args.shape}, batch {args.batch}, {str(dtype)[6:]} weights, "
          f"{'static' if args.static else 'dynamic'} cache{', compiled step' if args.compile else ''}; "
          f"{args.steps} steps, median of {args.reps}; load avg {load_before}")
    runners, samples = {}, {}
    names = args.models.split(",")
    for name in names:
        model = models[name].to(dtype)
        model.set_attn_implementation("sdpa")
        compiled = torch.compile(model.forward, fullgraph=True) if args.compile else None
        runners[name] = decode_steps(model, prompt, args.steps, args.static, compiled)
        for _ in range(2):  # warm-up (and compilation)
            runners[name][0]()
            runners[name][1]()
        samples[name] = []
    for r in range(args.reps):  # the models alternate, so both see the same machine
        for name in (names if r % 2 == 0 else names[::-1]):
            prefill, run = runners[name]
            prefill()
            t = time.process_time()  # process CPU time: on a shared machine wall time also counts waits for a core
            run()
            step = time.process_time() - t
            prefill()
            t = time.perf_counter()  # wall, like the profiler's op times (both include any wait for a core)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run()
            profiled = time.perf_counter() - t
            groups = {}
            for e in prof.key_averages():
                if e.key.startswith("aten::"):
                    groups[group_of(e.key)] = groups.get(group_of(e.key), 0.0) + e.self_cpu_time_total / 1e6
            samples[name].append(dict(step=step, python=profiled - sum(groups.values()), aten=sum(groups.values()),
                                      **groups))
            if args.top and r == 0:
                print(f"\n{name}: top ATen ops over {args.steps} steps")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    rows = []
    for name in names:  # medians over repetitions, per step, ms
        rows.append((name, *(1e3 * median([x.get(k, 0.0) for x in samples[name]]) / args.steps
                             for k in ("step", "python", "aten")),
                     {g: 1e3 * median([x.get(g, 0.0) for x in samples[name]]) / args.steps for g in GROUPS}
                     | {"other ops": 1e3 * median([x.get("other ops", 0.0) for x in samples[name]]) / args.steps}))
    print(f"\nper decoding step (ms); load avg {load_before} -> {load_average()}")
    print("| model | step, CPU time | profiled step | of which Python + framework | ATen ops | matmul | attention "
          "| cache writes | other ops |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, step, python, aten, g in rows:
        label = "GPTLite" if name == "ours" else "GPT-2"
        print(f"| {label} | {step:.2f} | {python + aten:.2f} | {python:.2f} ({100 * python / (python + aten):.0f}%) | "
              f"{aten:.2f} | "
              f"{g.get('matmul', 0):.2f} | {g.get('attention', 0):.2f} | {g.get('cache', 0):.2f} | "
              f"{g.get('other ops', 0):.2f} |")
    if set(names) == {"ours", "gpt2"}:
        ratios = [g["step"] / o["step"] for o, g in zip(samples["ours"], samples["gpt2"])]
        print(f"GPT-2 step / GPTLite step, same repetition: median {median(ratios):.2f}x "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
