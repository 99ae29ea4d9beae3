"""Generation speed: GPTLiteForCausalLM.generate vs GPT2LMHeadModel.generate (same weights, same run).

Greedy decoding of a 32-token prompt with the KV cache (transformers' DynamicCache), batch 1 and 8, 128 and 512
new tokens; the two models alternate, medians over repetitions. Time to first token = a generate() call with
max_new_tokens=1 (prefill + one token). New tokens/s counts every sequence of the batch. Also: the book's loop
without a cache (re-runs the whole context every step) and, with --static, cache_implementation="static" with and
without transformers' compiled decoding (CompileConfig).

    python bench/generate.py                      # cpu-small shape (4 layers, 256 wide, vocab 8192)
    python bench/generate.py --shape small --markdown
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from common import load_average, machine, make_config, median, pick_device, sync  # noqa: E402
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
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="cpu-small", help="a shape of bench/common.py SHAPES")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--new-tokens", default="128,512")
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--no-cache-batches", default="1", help="batches for the no-cache loop ('' to skip)")
    p.add_argument("--static", action="store_true", help="also static cache, eager and compiled decoding")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--markdown", action="store_true", help="print only the README table")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.markdown else print
    load_before = load_average()

    torch.manual_seed(0)
    config = make_config(args.shape)
    ours = GPTLiteForCausalLM(config).to(device).eval()
    gpt2 = ours.to_gpt2().to(device).eval()
    for m in (ours, gpt2):
        m.set_attn_implementation("sdpa")
        m.generation_config.eos_token_id = None  # always generate exactly max_new_tokens
        m.generation_config.pad_token_id = config.pad_token_id
    batches = [int(b) for b in args.batches.split(",")]
    new_tokens = [int(n) for n in args.new_tokens.split(",")]
    if args.prompt + max(new_tokens) > config.max_position_embeddings:
        raise SystemExit(f"prompt + new tokens exceed max_position_embeddings={config.max_position_embeddings}")
    gen = torch.Generator().manual_seed(1)
    prompts = {B: torch.randint(3, config.vocab_size, (B, args.prompt), generator=gen).to(device) for B in batches}
    kw = dict(do_sample=False)

    def run(model, B, n, **extra):
        ids = prompts[B]
        return timed(lambda: model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, **kw, **extra),
                     device)

    log(f"machine: {machine(device)}; shape {args.shape}; load avg {load_before}")
    for B in batches:  # warm-up and the greedy-equality check
        a, b = run(ours, B, 16)[1], run(gpt2, B, 16)[1]
        if not torch.equal(a, b):
            raise SystemExit(f"greedy outputs differ between GPTLite and GPT-2 at batch {B}")

    rows = []
    for B in batches:
        ttft = {"ours": [], "gpt2": []}
        for r in range(args.reps):
            for name in (("ours", "gpt2") if r % 2 == 0 else ("gpt2", "ours")):
                ttft[name].append(run(ours if name == "ours" else gpt2, B, 1)[0])
        for n in new_tokens:
            t = {"ours": [], "gpt2": []}
            for r in range(args.reps):
                for name in (("ours", "gpt2") if r % 2 == 0 else ("gpt2", "ours")):
                    t[name].append(run(ours if name == "ours" else gpt2, B, n)[0])
            row = dict(B=B, n=n, ours=B * n / median(t["ours"]), gpt2=B * n / median(t["gpt2"]),
                       ttft_ours=median(ttft["ours"]), ttft_gpt2=median(ttft["gpt2"]), nocache=None)
            if str(B) in args.no_cache_batches.split(","):
                secs, out = timed(lambda B=B, n=n: generate_no_cache(ours, prompts[B], n), device)
                if not torch.equal(out, run(ours, B, n)[1]):
                    raise SystemExit("the no-cache loop and generate() disagree")
                row["nocache"] = B * n / secs
            log(f"batch {B}, {n} new: ours {row['ours']:.0f} tok/s, gpt2 {row['gpt2']:.0f} tok/s, "
                f"no-cache {row['nocache'] or float('nan'):.0f} tok/s")
            rows.append(row)

    static_lines = []
    if args.static:
        B, n = batches[0], new_tokens[0]
        compiled = CompileConfig(fullgraph=False, mode="default")
        compiled._compile_all_devices = True  # transformers only auto-compiles on accelerators otherwise
        for label, extra in (("static cache", dict(cache_implementation="static", disable_compile=True)),
                             ("static cache + compiled decoding", dict(cache_implementation="static",
                                                                       compile_config=compiled))):
            for name, model in (("GPTLite", ours), ("GPT-2", gpt2)):
                try:
                    first, out = run(model, B, n, **extra)  # includes compilation
                    secs = median([run(model, B, n, **extra)[0] for _ in range(args.reps)])
                    same = torch.equal(out, run(ours, B, n)[1])
                    static_lines.append(f"| {label} | {name} | {B} | {n} | {B * n / secs:.0f} | first call {first:.1f}s; "
                                        f"same tokens as dynamic cache: {same} |")
                except Exception as e:  # report what transformers does with a custom model, do not hide it
                    static_lines.append(f"| {label} | {name} | {B} | {n} | – | failed: {type(e).__name__}: "
                                        f"{str(e).splitlines()[0][:120]} |")
                log(static_lines[-1])
    load_after = load_average()

    lines = [
        f"Machine: {machine(device)}; shape `{args.shape}` "
        f"({config.num_hidden_layers} layers, {config.hidden_size} wide, vocab {config.vocab_size}); greedy, "
        f"{args.prompt}-token prompt, median of {args.reps}; load average {load_before} → {load_after}.",
        f"`python bench/generate.py --shape {args.shape} --reps {args.reps} --threads {args.threads}"
        f"{' --static' if args.static else ''}`",
        "",
        "| batch | new tokens | GPTLite tok/s | GPT-2 tok/s | × GPT-2 | TTFT GPTLite / GPT-2 (ms) "
        "| no-cache loop tok/s | cache × no-cache |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        nc = f"{r['nocache']:.1f} | {r['ours'] / r['nocache']:.1f}×" if r["nocache"] else "– | –"
        lines.append(f"| {r['B']} | {r['n']} | {r['ours']:.0f} | {r['gpt2']:.0f} | {r['ours'] / r['gpt2']:.2f}× "
                     f"| {1e3 * r['ttft_ours']:.1f} / {1e3 * r['ttft_gpt2']:.1f} | {nc} |")
    if static_lines:
        lines += ["", "| cache | model | batch | new tokens | tok/s | note |", "|---|---|---|---|---|---|", *static_lines]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
