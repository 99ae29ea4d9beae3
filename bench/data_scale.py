"""Pretraining data at scale: preparing a corpus of 30 MB, 300 MB and 1 GB, next to the two anchors.

    python bench/data_scale.py        # 30 MB, 300 MB, 1 GB (run_clm-style up to 300 MB): ~45 min on 2 cores
    python bench/data_scale.py --sizes_mb 30 --methods gptlite nanogpt

Corpora are synthesized under --work (never in the repository) from shuffled lines of the embedded novels and
../shared/data/books_en. One byte-level BPE tokenizer (8,192 tokens, trained once on the novels) serves every
method. Each measurement runs in a fresh process, which reports its wall time and peak RSS (``getrusage``: the
process's own peak + the peak of its children, e.g. ``datasets``' map workers):

    gptlite      hf_gptlite's token cache (data/token_cache.py): text read in 8 MB chunks, encode_batch_fast,
                 uint16 file, validation tails held out; then "gptlite (cached)": the same in a new process, reused
    nanogpt      nanoGPT-style: 8 MB chunks of lines -> tokenizers' encode_batch -> uint16 file
    run_clm      transformers' run_clm-style: datasets' text builder, map(tokenize, num_proc=2), map(group_texts)

then the training loader's tokens/s per process from the cache (batches of 8 x 256, shuffled). Writes
--out/data_scale.json and the plot docs/data_scale.png (peak RSS and seconds against corpus size).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu import cpu_line, load_average  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BOOKS_EN = REPO.parent / "shared" / "data" / "books_en"
BLOCK = 256


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024  # Linux: kB


# ---- the corpora and the tokenizer -------------------------------------------------------------------
def source_lines() -> list[str]:
    from hf_gptlite.data.text import default_corpus_files

    files = default_corpus_files() + (sorted(BOOKS_EN.glob("*.txt")) if BOOKS_EN.is_dir() else [])
    return [line for f in files for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]


def synthesize(path: Path, size_mb: float, lines: list[str], seed: int = 0) -> None:
    """Shuffled lines, reshuffled at each pass, until ``size_mb`` MB; written once (kept when it exists)."""
    if path.exists() and path.stat().st_size >= size_mb * 1e6:
        return
    rng = random.Random(seed)
    tmp = path.with_suffix(".tmp")
    written = 0
    with open(tmp, "w", encoding="utf-8") as f:
        while written < size_mb * 1e6:
            rng.shuffle(lines)
            chunk = "\n".join(lines) + "\n"
            f.write(chunk)
            written += len(chunk.encode("utf-8"))
    tmp.rename(path)


def make_tokenizer(folder: Path) -> None:
    from hf_gptlite.data.text import clean_book_text, default_corpus_files, read_text_files
    from hf_gptlite.tokenization import train_bpe_tokenizer

    if not (folder / "tokenizer.json").is_file():
        texts = [clean_book_text(t) for t in read_text_files(default_corpus_files())]
        train_bpe_tokenizer(texts, vocab_size=8192, show_progress=False).save_pretrained(folder)


# ---- one measurement, in its own process -------------------------------------------------------------
def run_gptlite(corpus: Path, tokenizer, work: Path) -> dict:
    from hf_gptlite.data.corpus import load_corpus
    from hf_gptlite.data.token_cache import open_token_cache

    cache = open_token_cache(load_corpus([corpus]), tokenizer, work / "gptlite_cache", log=lambda *a: None)
    return {"tokens": cache.meta["train"]["tokens"] + cache.meta["validation"]["tokens"]}


def run_nanogpt(corpus: Path, tokenizer, work: Path) -> dict:
    import numpy as np

    backend, eos = tokenizer.backend_tokenizer, tokenizer.eos_token_id
    total = 0
    with open(corpus, encoding="utf-8") as f, open(work / "nanogpt_train.bin", "wb") as out:
        while lines := f.readlines(8 << 20):
            ids = [e.ids for e in backend.encode_batch(lines, add_special_tokens=False)]
            arr = np.fromiter((t for line in ids for t in line), dtype=np.uint16)
            arr.tofile(out)
            total += len(arr)
        np.array([eos], dtype=np.uint16).tofile(out)
    return {"tokens": total + 1}


def run_clm(corpus: Path, tokenizer, work: Path) -> dict:
    import datasets

    datasets.disable_progress_bars()
    cache = work / "run_clm_cache"
    raw = datasets.load_dataset("text", data_files=str(corpus), split="train", cache_dir=str(cache))
    tokenized = raw.map(lambda b: tokenizer(b["text"]), batched=True, num_proc=2, remove_columns=["text"])

    def group_texts(examples):
        joined = {k: sum(examples[k], []) for k in examples}
        n = len(joined["input_ids"]) // BLOCK * BLOCK
        return {k: [v[i : i + BLOCK] for i in range(0, n, BLOCK)] for k, v in joined.items()}

    grouped = tokenized.map(group_texts, batched=True, num_proc=2)
    return {"tokens": len(grouped) * BLOCK}


def run_loader(corpus: Path, tokenizer, work: Path, seconds: float = 10.0) -> dict:
    """Training batches per second of one process, from the (existing) cache, as the pretraining run reads them."""
    from hf_gptlite.data.corpus import load_corpus
    from hf_gptlite.pretrain.data import lm_data_from_corpus, lm_dataloaders

    data = lm_data_from_corpus(load_corpus([corpus]), tokenizer, BLOCK, work / "gptlite_cache", log=lambda *a: None)
    loader, _ = lm_dataloaders(data, batch_size=8)
    tokens, start = 0, time.perf_counter()
    for batch in loader:
        tokens += batch["input_ids"].numel()
        if time.perf_counter() - start > seconds:
            break
    return {"loader_tokens_per_s": tokens / (time.perf_counter() - start)}


METHODS = {"gptlite": run_gptlite, "gptlite (cached)": run_gptlite, "nanogpt": run_nanogpt, "run_clm": run_clm,
           "loader": run_loader}


def child(method: str, corpus: str, tokenizer_dir: str, work: str) -> None:
    import datasets  # noqa: F401  (every import before the clock starts)
    import numpy  # noqa: F401
    from transformers import AutoTokenizer

    import hf_gptlite.pretrain.data  # noqa: F401

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    start = time.perf_counter()
    result = METHODS[method](Path(corpus), tokenizer, Path(work))
    result.update(seconds=time.perf_counter() - start, peak_rss_mb=peak_rss_mb())
    print("RESULT " + json.dumps(result), flush=True)


def measure(method: str, corpus: Path, tokenizer_dir: Path, work: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="true")
    proc = subprocess.run([sys.executable, __file__, "--child", method, str(corpus), str(tokenizer_dir), str(work)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} on {corpus.name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(next(line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")))


# ---- the table and the plot --------------------------------------------------------------------------
def plot(results: list[dict], path: Path, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for method in ("gptlite", "gptlite (cached)", "nanogpt", "run_clm"):
        rows = sorted((r for r in results if r["method"] == method), key=lambda r: r["size_mb"])
        if not rows:
            continue
        sizes = [r["size_mb"] for r in rows]
        axes[0].plot(sizes, [r["peak_rss_mb"] / 1024 for r in rows], marker="o", label=method)
        axes[1].plot(sizes, [r["seconds"] for r in rows], marker="o", label=method)
    axes[0].axhline(2.0, color="grey", linestyle=":", label="target (2 GB)")
    axes[0].set_ylim(0, 2.5)
    axes[1].set_yscale("log")
    for ax, label in zip(axes, ("peak RSS (GB, imports included: ~0.65 GB)", "preparation time (s)"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("corpus (MB of text)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Preparing a pretraining corpus (tokenizer given) — {machine} (shared)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes_mb", type=float, nargs="+", default=[30, 300, 1000])
    parser.add_argument("--methods", nargs="+", default=["gptlite", "gptlite (cached)", "loader", "nanogpt", "run_clm"])
    parser.add_argument("--max_mb", nargs="*", default=["run_clm=300"],
                        help="METHOD=MB: skip a method on larger corpora (the anchors are slow on 2 cores)")
    parser.add_argument("--work", default="/tmp/gptlite_data_scale", help="corpora and caches (outside the repo)")
    parser.add_argument("--out", default="/tmp/gptlite_data_scale", help="where data_scale.json goes")
    parser.add_argument("--plot", default=str(REPO / "docs" / "data_scale.png"))
    parser.add_argument("--replot", action="store_true", help="only redraw the plot from --out/data_scale.json")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    if args.replot:
        saved = json.loads((Path(args.out) / "data_scale.json").read_text())
        return plot(saved["results"], Path(args.plot), saved["machine"])

    machine = cpu_line()
    print(machine, flush=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = work / "tokenizer"
    make_tokenizer(tokenizer_dir)
    lines = source_lines()
    results = []
    for size in args.sizes_mb:
        corpus = work / f"corpus_{size:g}MB.txt"
        synthesize(corpus, size, lines)
        mb = corpus.stat().st_size / 1e6
        run_dir = work / f"run_{size:g}MB"
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir()
        caps = {k: float(v) for k, v in (item.split("=") for item in args.max_mb)}
        for method in args.methods:
            if size > caps.get(method, float("inf")):
                continue
            r = measure(method, corpus, tokenizer_dir, run_dir)
            r.update(method=method, size_mb=round(mb, 1), mb_per_s=mb / r["seconds"], load_average=load_average())
            results.append(r)
            extra = f", {r['loader_tokens_per_s']:,.0f} tokens/s" if "loader_tokens_per_s" in r else ""
            print(f"{mb:7.1f} MB  {method:17s} {r['seconds']:8.1f} s  {r['mb_per_s']:6.2f} MB/s  "
                  f"peak RSS {r['peak_rss_mb']:7.0f} MB{extra}  (load {r['load_average']})", flush=True)
        shutil.rmtree(run_dir, ignore_errors=True)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "data_scale.json").write_text(json.dumps({"machine": machine, "results": results}, indent=1))
        plot(results, Path(args.plot), machine)
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
