"""Train a byte-level BPE tokenizer ([BOS]=0, [EOS]=1, [PAD]=2) and save it for AutoTokenizer.

    python recipes/train_tokenizer.py --output_dir tok-pt                       # the embedded novels, cleaned
    python recipes/train_tokenizer.py --files A.txt B.txt --vocab_size 8192 --output_dir DIR
    python recipes/train_tokenizer.py --dataset NAME --text_column text [--streaming] --output_dir DIR
    python recipes/train_tokenizer.py --config recipes/configs/tokenizer.yaml [--vocab_size 4096]

Then: ``AutoTokenizer.from_pretrained(DIR)``. Every field of ``hf_gptlite.tokenization.TokenizerConfig`` is a flag.
"""

import sys

from hf_gptlite.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("train_tokenizer"))
