"""Tokenizer benchmark: BPE training time on the embedded corpus, and encode throughput.

    python bench/tokenizer.py [--vocab_size 8192] [--repeats 3]

Prints medians over ``--repeats`` runs: training time on the cleaned embedded novels, then encode throughput
(MB of UTF-8 text per second) for batched calls (the Rust backend spreads a batch over all cores) next to one
call per paragraph, and the compression (bytes and words per token).
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu import cpu_line  # noqa: E402

from hf_gptlite.data.text import clean_book_text, default_corpus_files, read_text_files
from hf_gptlite.tokenization import train_bpe_tokenizer


def timed(fn, repeats):
    """(median wall seconds, median CPU seconds of this process, all threads; the last result)."""
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab_size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=1024)
    args = parser.parse_args()

    texts = [clean_book_text(t) for t in read_text_files(default_corpus_files())]
    paragraphs = [p for t in texts for p in t.split("\n")]
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(cpu_line())
    print(f"corpus: {len(texts)} cleaned novels, {megabytes:.2f} MB, {len(paragraphs)} paragraphs; "
          f"{os.cpu_count()} CPU cores visible, load average {os.getloadavg()[0]:.1f}")

    train_s, train_cpu, tok = timed(lambda: train_bpe_tokenizer(texts, args.vocab_size, show_progress=False), args.repeats)
    print(f"train (vocab {args.vocab_size}, got {len(tok)}): median {train_s:.2f} s wall, {train_cpu:.2f} s CPU "
          f"over {args.repeats} runs")

    batches = [paragraphs[i : i + args.batch_size] for i in range(0, len(paragraphs), args.batch_size)]
    batched_s, batched_cpu, ids = timed(lambda: [x for b in batches for x in tok(b)["input_ids"]], args.repeats)
    single_s, single_cpu, _ = timed(lambda: [tok(p)["input_ids"] for p in paragraphs], args.repeats)
    n_tokens = sum(len(x) for x in ids)
    n_words = sum(len(p.split()) for p in paragraphs)
    print(f"encode, batched ({args.batch_size} paragraphs/call, all cores): {megabytes / batched_s:6.2f} MB/s "
          f"(median {batched_s:.2f} s wall, {batched_cpu:.2f} s CPU)")
    print(f"encode, one call per paragraph:                    {megabytes / single_s:6.2f} MB/s "
          f"(median {single_s:.2f} s wall, {single_cpu:.2f} s CPU); batched/one-by-one = {single_s / batched_s:.2f}x")
    print(f"compression: {n_tokens} tokens, {megabytes * 1e6 / n_tokens:.2f} bytes/token, "
          f"{n_tokens / n_words:.2f} tokens/word")
    for word in ("desconectado", " desconectado"):
        print(f"{word!r} -> {tok.tokenize(word)}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (wall figures shrink on a busy machine; CPU ones less)")


if __name__ == "__main__":
    main()
