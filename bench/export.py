"""Run it outside PyTorch, measured: one run, the CPU named, every figure side by side (docs/export.md).

Table 1, formats (one model: --model_dir, or a random-init cpu-small with a tokenizer trained on the novels):
file size, load time, batch-1 greedy decoding tokens/s (20-token prompts, --new-tokens new), and agreement with
PyTorch fp32 (the share of the greedy tokens, position by position over 3 prompts, that are the same) for
PyTorch fp32 / bf16 (only where the CPU has native bf16) / int8 (torchao weight-only), llama.cpp f32 / q8_0
(llama-cpp-python, the same prompts, the same thread count), ONNX Runtime and OpenVINO (transformers' exporters).

Table 2, cached decoding tokens/s at the cpu-small and 124m shapes (random init), batch 1 and 8, GPTLite next to
GPT2LMHeadModel (``to_gpt2()``: the same weights), each fp32, int8 weight-only (TorchAoConfig +
Int8WeightOnlyConfig, through from_pretrained as a user would) and int8 dynamic (Int8DynamicActivationInt8WeightConfig).

Table 3, the kernels behind table 2, one matmul at the 124m shapes (batch 1 and 8): fp32, what torchao's
weight-only path runs (int8 -> fp32, then an fp32 matmul), ``aten._weight_int8pack_mm`` (gpt-fast's CPU kernel) and
``torch._int_mm`` on int8 activations (VNNI int8 GEMM).

Every speed is the median of --rounds rounds, the variants alternating order from round to round; threads: 1 by
default (a decoding step is many small ops; on a shared 2-core machine a second thread waits for a core).

    python bench/export.py                       # about 15 minutes on 2 shared cores
    python bench/export.py --model_dir runs/pretrain_pt --markdown
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from common import has_native_bf16, make_config  # noqa: E402
from cpu import cpu_line  # noqa: E402

PROMPT_TOKENS = 20


def folder_size(path: Path) -> int:
    path = Path(path)
    return (
        path.stat().st_size
        if path.is_file()
        else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    )


def need(module: str) -> bool:
    __import__(module)  # ImportError: the row is skipped, with the reason
    return True


def agreement(got: list[list[int]], want: list[list[int]]) -> float:
    same = sum(a == b for g, w in zip(got, want) for a, b in zip(g, w))
    return same / sum(len(w) for w in want)


# ---- the runners of table 1: each (load, generate) for one format -------------------------------------------------
class TorchRunner:
    def __init__(self, folder, int8=False, dtype=torch.float32):
        self.folder, self.int8, self.dtype = folder, int8, dtype

    def load(self):
        from transformers import AutoModelForCausalLM

        from hf_gptlite.export.int8 import load_int8

        self.model = (
            load_int8(self.folder)
            if self.int8
            else AutoModelForCausalLM.from_pretrained(self.folder, dtype=self.dtype).eval()
        )
        self.model.generation_config.eos_token_id = None

    def generate(self, ids, n):
        x = torch.tensor([ids])
        with torch.no_grad():
            out = self.model.generate(
                x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=0,
            )
        return out[0, len(ids) :].tolist()


class LlamaRunner:
    def __init__(self, path, threads):
        self.path, self.threads = path, threads

    def load(self):
        import llama_cpp

        self.llm = llama_cpp.Llama(
            model_path=str(self.path),
            n_ctx=512,
            n_batch=512,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            verbose=False,
        )

    def generate(self, ids, n):  # llama.cpp's sampler at temperature 0: greedy
        out = []
        for token in self.llm.generate(
            ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True
        ):
            out.append(token)
            if len(out) == n:
                return out
        return out


class ExportedRunner:
    def __init__(self, folder, threads):
        self.folder, self.threads = folder, threads

    def load(self):
        from hf_gptlite.export.onnx import load_exported

        self.exported = load_exported(self.folder, threads=self.threads)

    def generate(self, ids, n):
        from hf_gptlite.export.onnx import greedy_generate

        return greedy_generate(self.exported, torch.tensor([ids]), n)[0, len(ids) :].tolist()


def format_table(args, work: Path, log):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_gptlite.export.gguf import export_gguf
    from hf_gptlite.export.int8 import save_int8
    from hf_gptlite.export.onnx import save_for_runtime

    model_dir = Path(args.model_dir) if args.model_dir else random_cpu_small(work, log)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    from hf_gptlite.data.text import clean_book_text, default_corpus_files, read_text_files

    prompts = [
        tok(clean_book_text(t)[5000:5400])["input_ids"][:PROMPT_TOKENS]
        for t in read_text_files(default_corpus_files())[:3]
    ]
    rows = {"PyTorch fp32": (model_dir / "model.safetensors", TorchRunner(model_dir))}
    if has_native_bf16(torch.device("cpu")):
        rows["PyTorch bf16"] = (None, TorchRunner(model_dir, dtype=torch.bfloat16))
    else:
        log("PyTorch bf16: skipped (no native bf16 on this CPU: no avx512_bf16 / amx_bf16)")
    for name, make in [
        (
            "PyTorch int8 (torchao)",
            lambda: (
                save_int8(model_dir, work / "int8") / "model.safetensors",
                TorchRunner(work / "int8", int8=True),
            ),
        ),
        (
            "llama.cpp f32",
            lambda: (
                need("llama_cpp") and export_gguf(model, tok, work / "f32.gguf"),
                LlamaRunner(work / "f32.gguf", args.threads),
            ),
        ),
        (
            "llama.cpp q8_0",
            lambda: (
                need("llama_cpp") and export_gguf(model, tok, work / "q8.gguf", dtype="q8_0"),
                LlamaRunner(work / "q8.gguf", args.threads),
            ),
        ),
        (
            "ONNX Runtime",
            lambda: (
                save_for_runtime(model, work / "onnx", "onnx"),
                ExportedRunner(work / "onnx", args.threads),
            ),
        ),
        (
            "OpenVINO",
            lambda: (
                save_for_runtime(model, work / "ov", "openvino"),
                ExportedRunner(work / "ov", args.threads),
            ),
        ),
    ]:
        try:
            t = time.perf_counter()
            rows[name] = make()
            log(f"{name}: written in {time.perf_counter() - t:.0f} s")
        except Exception as err:  # a runtime that is not installed: say so, keep the others
            log(f"{name}: skipped ({type(err).__name__}: {str(err).splitlines()[0][:150]})")
    results = {}
    for name, (path, runner) in rows.items():
        t = time.perf_counter()
        runner.load()
        results[name] = dict(
            size=folder_size(path) if path else None, load=time.perf_counter() - t, speeds=[]
        )
        results[name]["tokens"] = [runner.generate(p, args.new_tokens) for p in prompts]  # also the warm-up
    want = results["PyTorch fp32"]["tokens"]
    names = list(rows)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            rows[name][1].generate(prompts[r % len(prompts)], args.new_tokens)
            results[name]["speeds"].append(args.new_tokens / (time.perf_counter() - t))
    lines = [
        f"Model: {model_dir if args.model_dir else 'random-init cpu-small (no trained model given)'}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; batch 1, {PROMPT_TOKENS}-token "
        f"prompts, {args.new_tokens} new tokens, {args.threads} thread(s), median of {args.rounds} rounds.",
        "",
        "| format | file size | load time | batch-1 tokens/s | agreement with PyTorch fp32 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, res in results.items():
        size = f"{res['size'] / 2**20:.1f} MiB" if res["size"] else "(same file)"
        lines.append(
            f"| {name} | {size} | {res['load']:.2f} s | {statistics.median(res['speeds']):.1f} | "
            f"{100 * agreement(res['tokens'], want):.1f}% |"
        )
    return lines


def random_cpu_small(work: Path, log) -> Path:
    from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM
    from hf_gptlite.data.text import clean_book_text, default_corpus_files, read_text_files
    from hf_gptlite.tokenization import align_config_with_tokenizer, train_bpe_tokenizer

    log("no --model_dir: a random-init cpu-small with a tokenizer trained on 200k characters of each novel")
    texts = [clean_book_text(t)[:200_000] for t in read_text_files(default_corpus_files())]
    tok = train_bpe_tokenizer(texts, vocab_size=8192, show_progress=False)
    torch.manual_seed(0)
    model = GPTLiteForCausalLM(align_config_with_tokenizer(GPTLiteConfig.from_preset("cpu-small"), tok))
    model.save_pretrained(work / "cpu_small")
    tok.save_pretrained(work / "cpu_small")
    return work / "cpu_small"


# ---- table 2: cached decoding, GPTLite next to GPT-2, fp32 / int8 -------------------------------------------------
def decode_table(args, work: Path, log):
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig
    from transformers import AutoModelForCausalLM, TorchAoConfig

    from hf_gptlite import GPTLiteForCausalLM

    lines = [
        "| shape | model | weights | batch 1 tok/s | batch 8 tok/s | int8 Linear layers |",
        "|---|---|---|---:|---:|---:|",
    ]
    quant = {
        "fp32": None,
        "int8 weight-only": Int8WeightOnlyConfig,
        "int8 dynamic (W8A8)": Int8DynamicActivationInt8WeightConfig,
    }
    for shape in args.shapes.split(","):
        torch.manual_seed(0)
        ours = GPTLiteForCausalLM(make_config(shape, max_position_embeddings=1024)).eval()
        ours.save_pretrained(work / f"{shape}-gptlite")
        ours.to_gpt2().save_pretrained(work / f"{shape}-gpt2")
        del ours
        models = {}
        for family in ("GPTLite", "GPT2LMHeadModel"):
            for qname, qcls in quant.items():
                kwargs = {"quantization_config": TorchAoConfig(qcls()), "device_map": "cpu"} if qcls else {}
                folder = work / f"{shape}-{'gptlite' if family == 'GPTLite' else 'gpt2'}"
                m = AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()
                m.generation_config.eos_token_id = None
                models[family, qname] = m
        gen = torch.Generator().manual_seed(1)
        prompts = {B: torch.randint(3, 8000, (B, 32), generator=gen) for B in (1, 8)}
        speeds = {(k, B): [] for k in models for B in (1, 8)}
        keys = list(models)
        for B in (1, 8):
            for k in keys:  # warm-up
                models[k].generate(prompts[B], max_new_tokens=4, do_sample=False, pad_token_id=0)
            for r in range(args.rounds):
                for k in keys if r % 2 == 0 else keys[::-1]:
                    t = time.perf_counter()
                    with torch.no_grad():
                        models[k].generate(
                            prompts[B],
                            attention_mask=torch.ones_like(prompts[B]),
                            max_new_tokens=args.decode_tokens,
                            min_new_tokens=args.decode_tokens,
                            do_sample=False,
                            pad_token_id=0,
                        )
                    speeds[k, B].append(B * args.decode_tokens / (time.perf_counter() - t))
            log(f"{shape} batch {B} done")
        for (family, qname), m in models.items():
            n_int8 = sum(
                type(mod.weight).__name__ == "Int8Tensor" for mod in m.modules() if hasattr(mod, "weight")
            )
            lines.append(
                f"| {shape} | {family} | {qname} | {statistics.median(speeds[(family, qname), 1]):.1f} | "
                f"{statistics.median(speeds[(family, qname), 8]):.1f} | {n_int8} |"
            )
        del models
    return lines


# ---- table 3: the matmul kernels ----------------------------------------------------------------------------------
def _w8a8(x, wq, scale):
    """Quantize the activations per row to int8, multiply with torch._int_mm (int32 out), scale back."""
    s = x.abs().amax(1, keepdim=True) / 127
    xq = (x / s).round().to(torch.int8)
    rows = xq.shape[0]
    xq = torch.cat(
        [xq, xq.new_zeros(max(0, 17 - rows), xq.shape[1])]
    )  # _int_mm on CPU wants more than 16 rows
    return torch._int_mm(xq, wq.t())[:rows] * s * scale


def kernel_table(args):
    import torch.nn.functional as F

    def median_us(fn, *a, n=20):
        fn(*a)
        times = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            for _ in range(n):
                fn(*a)
            times.append((time.perf_counter() - t) / n)
        return statistics.median(times) * 1e6

    lines = [
        "| matmul (in -> out) | rows | fp32 | int8 -> fp32 + fp32 matmul (torchao weight-only) | "
        "_weight_int8pack_mm | _int_mm on int8 activations (W8A8) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for K, N in ((768, 2304), (768, 3072), (3072, 768), (768, 50257)):
        for rows in (1, 8):
            x, w = torch.randn(rows, K), torch.randn(N, K)
            scale = w.abs().amax(1) / 127
            wq = (w / scale[:, None]).round().to(torch.int8)
            t = [
                median_us(F.linear, x, w),
                median_us(lambda x, wq, scale: torch.mm(x, wq.t().to(x.dtype)) * scale, x, wq, scale),
                median_us(torch.ops.aten._weight_int8pack_mm, x, wq, scale),
                median_us(_w8a8, x, wq, scale),
            ]
            lines.append(
                f"| {K} -> {N} | {rows} | {t[0]:.0f} µs | {t[1]:.0f} µs ({t[0] / t[1]:.2f}x) | "
                f"{t[2]:.0f} µs ({t[0] / t[2]:.2f}x) | {t[3]:.0f} µs ({t[0] / t[3]:.2f}x) |"
            )
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model_dir", default=None, help="a GPTLite folder for table 1 (default: random-init cpu-small)"
    )
    p.add_argument("--new-tokens", dest="new_tokens", type=int, default=64)
    p.add_argument("--decode-tokens", dest="decode_tokens", type=int, default=32)
    p.add_argument("--shapes", default="cpu-small,124m")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tables", default="formats,decode,kernels")
    p.add_argument("--markdown", action="store_true", help="progress on stderr, the tables alone on stdout")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.markdown else print
    out = [
        cpu_line().replace("machine:", "Machine:") + f" (before); torch {torch.__version__}, "
        f"{args.threads} thread(s); the machine was shared with other jobs",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for table in args.tables.split(","):
            start = time.perf_counter()
            lines = {
                "formats": format_table,
                "decode": decode_table,
                "kernels": lambda a, w, lg: kernel_table(a),
            }[table](args, work, log)
            out += [f"### {table} ({time.perf_counter() - start:.0f} s)", "", *lines, ""]
            log("\n".join(out[-len(lines) - 3 :]))
    out.append(cpu_line().replace("machine:", "Machine:") + " (after)")
    print("\n".join(out))


if __name__ == "__main__":
    main()
