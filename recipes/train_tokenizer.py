"""Train a byte-level BPE tokenizer ([BOS]=0, [EOS]=1, [PAD]=2) and save it for AutoTokenizer.

    python recipes/train_tokenizer.py --output_dir tok-pt                       # the embedded novels, cleaned
    python recipes/train_tokenizer.py --files A.txt B.txt --vocab_size 8192 --output_dir DIR
    python recipes/train_tokenizer.py --dataset NAME --text_column text [--streaming] --output_dir DIR
    python recipes/train_tokenizer.py --config recipes/configs/tokenizer.yaml [--vocab_size 4096]

Then: ``AutoTokenizer.from_pretrained(DIR)``.
"""

import sys
from dataclasses import dataclass, field

from hf_gptlite import training
from hf_gptlite.data.text import clean_book_text, default_corpus_files, read_text_files
from hf_gptlite.tokenization import train_bpe_tokenizer


@dataclass
class TrainTokenizerConfig:
    output_dir: str = field(metadata={"help": "Folder to save the tokenizer into (created if missing)."})
    files: list[str] | None = field(
        default=None, metadata={"help": "UTF-8 text files. Default (no --files, no --dataset): the embedded novels."}
    )
    dataset: str | None = field(default=None, metadata={"help": "A `datasets` name or path, instead of --files."})
    dataset_config: str | None = field(default=None, metadata={"help": "The dataset's configuration name."})
    split: str = field(default="train", metadata={"help": "The dataset split."})
    text_column: str = field(default="text", metadata={"help": "The dataset column holding the text."})
    streaming: bool = field(default=False, metadata={"help": "Stream the dataset instead of downloading it all."})
    clean: bool = field(
        default=False, metadata={"help": "Apply clean_book_text to --files (always done for the embedded novels)."}
    )
    vocab_size: int = field(default=8192, metadata={"help": "Vocabulary size, special tokens included."})
    min_frequency: int = field(default=2, metadata={"help": "Minimum count of a pair to be merged."})
    add_bos: bool = field(default=False, metadata={"help": "Encode every text as [BOS] ...."})
    add_eos: bool = field(default=False, metadata={"help": "Encode every text as ... [EOS]."})


def parse_config(argv=None) -> TrainTokenizerConfig:
    """CLI flags, over the values of an optional `--config file.yaml` (the recipes' shared parser)."""
    return training.parse_config(TrainTokenizerConfig, argv)


def corpus(config: TrainTokenizerConfig):
    """The training texts: --files, --dataset, or the embedded novels (cleaned)."""
    if config.files is not None and config.dataset is not None:
        raise ValueError("give --files or --dataset, not both")
    if config.dataset is not None:
        import datasets

        ds = datasets.load_dataset(config.dataset, config.dataset_config, split=config.split, streaming=config.streaming)
        if ds.column_names is not None and config.text_column not in ds.column_names:
            raise ValueError(f"dataset {config.dataset!r} has no column {config.text_column!r}; columns: {ds.column_names}")
        return ds[config.text_column]
    if config.files is not None:
        if not config.files:
            raise ValueError("--files was given no file")
        texts = read_text_files(config.files)
        return [clean_book_text(t) for t in texts] if config.clean else texts
    return [clean_book_text(t) for t in read_text_files(default_corpus_files())]


def main(argv=None):
    config = parse_config(argv)
    tokenizer = train_bpe_tokenizer(
        corpus(config),
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        add_bos=config.add_bos,
        add_eos=config.add_eos,
    )
    tokenizer.save_pretrained(config.output_dir)
    print(f"saved a {len(tokenizer)}-token tokenizer to {config.output_dir}")
    print(f"'desconectado' -> {tokenizer.tokenize('desconectado')}")
    return tokenizer


def cli(argv=None) -> int:
    """`main` for the command line: bad input prints one clear line and exits with status 1."""
    try:
        main(argv)
    except (ValueError, TypeError, FileNotFoundError, IsADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
