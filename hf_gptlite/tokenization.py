"""Tokenizers: train a byte-level BPE tokenizer, load GPT-2's, and make a model config agree with one.

Byte-level BPE (the GPT-2 scheme, built on the ``tokenizers`` library): text is split with GPT-2's regex, each
piece becomes UTF-8 bytes shown as 256 printable characters, and BPE merges those. All 256 bytes are in the
initial alphabet, so any Unicode string (accents, emoji, CJK, control characters) encodes without an unknown
token and ``decode(encode(s)) == s`` exactly: no normalizer, no prefix space, ``clean_up_tokenization_spaces=False``.

Special tokens: ``[BOS]=0, [EOS]=1, [PAD]=2`` (the order of ``special_tokens``; the model presets rely on it).
Text that merely *looks* like a special token ("[EOS]" typed in a document) is encoded as ordinary bytes, so
user text can never forge a document boundary: the tokenizers are saved with ``split_special_tokens=True``.
The special ids come only from ``add_bos``/``add_eos`` (the post-processor), from the code that builds the
input (``tokenizer.eos_token_id``), or when the caller asks: ``tokenizer(text, split_special_tokens=False)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, GPT2Tokenizer, PreTrainedTokenizerFast

from .errors import InputValueError, MissingInputError, check_output_dir

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[BOS]", "[EOS]", "[PAD]")
GPT2_EOS = "<|endoftext|>"
BYTE_ALPHABET_SIZE = 256


def train_bpe_tokenizer(
    texts,
    vocab_size: int,
    min_frequency: int = 2,
    special_tokens: Iterable[str] = SPECIAL_TOKENS,
    add_bos: bool = False,
    add_eos: bool = False,
    show_progress: bool = True,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer and return it as a ``transformers`` fast tokenizer.

    Args:
        texts: a list of file paths (``pathlib.Path``, or ``str`` naming existing files: read in chunks cut at line
            breaks, which gives the tokenizer of the whole files), or an iterable of strings (a list, a generator such
            as ``hf_gptlite.data.corpus.sample_text``, a ``datasets`` column ``ds["text"]``; ``None`` rows are skipped).
            The trainer keeps word counts, not the texts: memory follows the vocabulary of the text, not its size.
        vocab_size: the size of the final vocabulary, special tokens included; at least 256 + their number.
            A small corpus may stop short of it (a warning says so): use ``len(tokenizer)`` afterwards.
        min_frequency: a pair must occur this often to be merged.
        special_tokens: ``(bos, eos, pad, *extra)``; they get ids 0, 1, 2, ... in this order.
        add_bos, add_eos: wrap every encoded text as ``[BOS] ... [EOS]`` (a ``TemplateProcessing``
            post-processor, saved in ``tokenizer.json``).
        show_progress: show the trainer's progress bar.

    Example::

        >>> tok = train_bpe_tokenizer(["olá mundo"] * 50, vocab_size=300, show_progress=False)
        >>> tok.decode(tok("olá 🙂")["input_ids"])
        'olá 🙂'
    """
    special_tokens = list(special_tokens)
    if len(special_tokens) < 3 or len(set(special_tokens)) != len(special_tokens) or not all(
        isinstance(t, str) and t for t in special_tokens
    ):
        raise InputValueError(f"special_tokens must be distinct non-empty strings (bos, eos, pad, *extra), got {special_tokens!r}")
    smallest = BYTE_ALPHABET_SIZE + len(special_tokens)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < smallest:
        raise InputValueError(
            f"vocab_size={vocab_size!r} is too small: it must hold the {BYTE_ALPHABET_SIZE} byte tokens plus "
            f"{len(special_tokens)} special tokens, so at least {smallest}"
        )
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 0:
        raise InputValueError(f"min_frequency must be a non-negative integer, got {min_frequency!r}")

    corpus, length = _as_text_iterator(texts)
    chars = 0  # counted while the trainer reads, to report an empty corpus

    def counted() -> Iterator[str]:
        nonlocal chars
        for text in corpus:
            chars += len(text.strip())
            yield text

    tokenizer = Tokenizer(models.BPE())
    # add_prefix_space=False: " word" and "word" stay different (no invented space, exact round trip);
    # trim_offsets=False: offsets cover the exact characters of each token, leading space included.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special_tokens,  # ids 0, 1, 2, ... in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: no unknown token, ever
        show_progress=show_progress,
    )
    tokenizer.train_from_iterator(counted(), trainer=trainer, length=length)
    if chars == 0:
        raise InputValueError("the training corpus is empty (no non-whitespace text)")
    if tokenizer.get_vocab_size() < vocab_size:
        logger.warning(
            "the corpus only supports %d tokens (asked for %d): no pair left occurring %d times",
            tokenizer.get_vocab_size(), vocab_size, min_frequency,
        )
    return _wrap(tokenizer, special_tokens, add_bos=add_bos, add_eos=add_eos)


def _as_text_iterator(texts) -> tuple[Iterator[str], int | None]:
    """Files or strings -> (iterator of strings, its length when known)."""
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts is a single string: pass a list of file paths or an iterable of texts")
    if isinstance(texts, os.PathLike):
        texts = [texts]
    if isinstance(texts, (list, tuple)):
        is_path = [isinstance(t, os.PathLike) or (isinstance(t, str) and "\n" not in t and os.path.isfile(t)) for t in texts]
        if texts and any(is_path):
            if not all(is_path):
                missing = next(t for t, p in zip(texts, is_path, strict=True) if not p)
                raise MissingInputError(f"texts mixes files with something that is not an existing file: {str(missing)[:80]!r}")
            from .data.corpus import iter_documents, load_corpus

            files = load_corpus(texts, clean=False, validation_fraction=0).train  # checked here, read in chunks
            return (piece for doc in iter_documents(files) for piece in doc), None
    if not isinstance(texts, Iterable):
        raise TypeError(f"texts must be file paths or an iterable of strings, got {type(texts).__name__}")
    length = len(texts) if hasattr(texts, "__len__") else None

    def strings() -> Iterator[str]:
        for text in texts:
            if text is None:
                continue
            if not isinstance(text, str):
                raise TypeError(f"texts must contain strings, got an item of type {type(text).__name__}")
            yield text

    return strings(), length


def _wrap(tokenizer: Tokenizer, special_tokens: list[str], add_bos: bool, add_eos: bool) -> PreTrainedTokenizerFast:
    bos, eos, pad, *extra = special_tokens
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        extra_special_tokens=extra,
        add_bos_token=add_bos,  # -> TemplateProcessing "[BOS] $A [EOS]" in tokenizer.json
        add_eos_token=add_eos,
        split_special_tokens=True,  # "[EOS]" in the text is plain text (see the module docstring)
        clean_up_tokenization_spaces=False,  # the cleanup would delete real spaces ("a ." -> "a.")
    )
    ids = [fast.convert_tokens_to_ids(t) for t in special_tokens]
    if ids != list(range(len(special_tokens))):  # cannot happen with BpeTrainer; the presets rely on it
        raise RuntimeError(f"special tokens got ids {ids}, expected 0..{len(ids) - 1}")
    return fast


def load_gpt2_tokenizer(path_or_id: str | os.PathLike = "openai-community/gpt2", split_special_tokens: bool = True):
    """GPT-2's byte-level BPE tokenizer, with ``<|endoftext|>`` as EOS, BOS and PAD.

    ``path_or_id`` is a folder with ``vocab.json`` + ``merges.txt`` (as OpenAI and the book ship them), a folder
    saved by ``save_pretrained``, or a Hub id (downloaded through ``AutoTokenizer``). ``split_special_tokens``
    has the same meaning as for :func:`train_bpe_tokenizer`: by default the text "<|endoftext|>" in a document
    is plain text, not id 50256.
    """
    path = Path(path_or_id)
    kwargs = dict(split_special_tokens=split_special_tokens, clean_up_tokenization_spaces=False)
    if path.is_dir() and not (path / "tokenizer.json").is_file():
        missing = [name for name in ("vocab.json", "merges.txt") if not (path / name).is_file()]
        if missing:
            raise MissingInputError(f"{path} has no tokenizer.json and is missing {', '.join(missing)}")
        tokenizer = GPT2Tokenizer.from_pretrained(str(path), **kwargs)
    elif path.exists() and not path.is_dir():
        raise InputValueError(f"{path} is a file: pass the folder that holds vocab.json and merges.txt")
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(path_or_id), **kwargs)
    if GPT2_EOS not in tokenizer.get_vocab():
        raise InputValueError(f"{path_or_id} has no {GPT2_EOS!r} token: is it a GPT-2 tokenizer?")
    tokenizer.bos_token = tokenizer.eos_token = tokenizer.pad_token = GPT2_EOS
    return tokenizer


def align_config_with_tokenizer(config, tokenizer, fixed_vocab: bool = False):
    """Make ``config`` (a ``GPTLiteConfig``) agree with ``tokenizer``; returns the same config, changed in place.

    Sets ``vocab_size = len(tokenizer)`` and ``bos/eos/pad_token_id`` from the tokenizer (for a model about to
    be trained). With ``fixed_vocab=True`` (the config of trained weights, e.g. converted GPT-2) the embedding
    size and the learned bos/eos ids cannot change: it raises ``ValueError`` when the tokenizer has more tokens
    than the embedding has rows, or when the config's bos/eos ids differ from the tokenizer's; the pad id
    (never learned: padding is masked) is still set. The tokenizer must have an EOS token.
    """
    if tokenizer.eos_token_id is None:
        raise InputValueError("the tokenizer has no eos_token: a causal LM needs one to end documents and generation")
    size = len(tokenizer)
    ids = {name: getattr(tokenizer, name) for name in ("bos_token_id", "eos_token_id", "pad_token_id")}
    if fixed_vocab:
        if size > config.vocab_size:
            raise InputValueError(
                f"the tokenizer has {size} tokens but the model's vocab_size is {config.vocab_size}: "
                f"ids >= {config.vocab_size} have no embedding; use the tokenizer the weights were trained with"
            )
        for name in ("bos_token_id", "eos_token_id"):
            have = getattr(config, name)
            allowed = have if isinstance(have, list) else [have]
            if have is not None and ids[name] is not None and ids[name] not in allowed:
                raise InputValueError(
                    f"config.{name}={have} but the tokenizer's is {ids[name]}: the trained weights learned "
                    f"the meaning of id {have}, so this tokenizer does not fit these weights"
                )
    else:
        config.vocab_size = size
    for name, value in ids.items():
        if fixed_vocab and (value is None or (name == "eos_token_id" and isinstance(config.eos_token_id, list))):
            continue  # keep what the weights were trained with
        setattr(config, name, value)
    config.check()
    return config


def ensure_pad_token(tokenizer):
    """Give ``tokenizer`` a pad token when it has none (GPT-2's): its EOS, as transformers does. Padding is
    always masked (attention mask, ``-100`` labels), so the id never reaches a loss. Returns the tokenizer."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise InputValueError(f"the tokenizer of {tokenizer.name_or_path!r} has neither a pad nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# ---- the tokenizer job (recipes/train_tokenizer.py, python -m hf_gptlite train_tokenizer) --------------------
@dataclass
class TokenizerConfig:
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
    max_mb: float = field(
        default=256.0, metadata={"help": "--files: train on at most this many MB of text, sampled evenly (bounds the time)"}
    )
    add_bos: bool = field(default=False, metadata={"help": "Encode every text as [BOS] ...."})
    add_eos: bool = field(default=False, metadata={"help": "Encode every text as ... [EOS]."})


def tokenizer_corpus(config: TokenizerConfig):
    """The training texts: --files (read in chunks, at most ``max_mb`` sampled evenly), --dataset, or the embedded
    novels (cleaned)."""
    if config.files is not None and config.dataset is not None:
        raise InputValueError("give --files or --dataset, not both")
    if config.dataset is not None:
        import datasets

        from .loading import resolve_source

        resolve_source(config.dataset, "dataset", repo_type="dataset")  # a local path, or a Hub id whose Hub answers
        ds = datasets.load_dataset(config.dataset, config.dataset_config, split=config.split, streaming=config.streaming)
        if ds.column_names is not None and config.text_column not in ds.column_names:
            raise InputValueError(f"dataset {config.dataset!r} has no column {config.text_column!r}; columns: {ds.column_names}")
        return ds[config.text_column]
    if config.files is not None and not config.files:
        raise InputValueError("--files was given no file")
    from .data.corpus import load_corpus, sample_text

    files = load_corpus(config.files, True if config.files is None else config.clean, validation_fraction=0).train
    return sample_text(files, config.max_mb * 1e6)  # every file checked here; read as the trainer goes


def run_train_tokenizer(config: TokenizerConfig) -> PreTrainedTokenizerFast:
    """Train the tokenizer ``config`` describes, save it to ``config.output_dir``, print what was saved. Every
    input is checked before ``output_dir`` is written."""
    check_output_dir(config.output_dir)
    smallest = BYTE_ALPHABET_SIZE + len(SPECIAL_TOKENS)
    if config.vocab_size < smallest:  # before reading any text
        raise InputValueError(f"vocab_size={config.vocab_size} is too small: it must hold the {BYTE_ALPHABET_SIZE} "
                              f"byte tokens plus {len(SPECIAL_TOKENS)} special tokens, so at least {smallest}")
    tokenizer = train_bpe_tokenizer(
        tokenizer_corpus(config),
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        add_bos=config.add_bos,
        add_eos=config.add_eos,
    )
    tokenizer.save_pretrained(config.output_dir)
    print(f"saved a {len(tokenizer)}-token tokenizer to {config.output_dir}")
    print(f"'desconectado' -> {tokenizer.tokenize('desconectado')}")
    return tokenizer


__all__ = ["SPECIAL_TOKENS", "TokenizerConfig", "align_config_with_tokenizer", "ensure_pad_token",
           "load_gpt2_tokenizer", "run_train_tokenizer", "tokenizer_corpus", "train_bpe_tokenizer"]
