import json
import os
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers.pre_tokenizers import ByteLevel
from transformers import AutoTokenizer

from hf_gptlite import GPTLiteConfig
from hf_gptlite.cli import parse_config, run_command
from hf_gptlite.data.text import clean_book_text, default_corpus_files, read_text_files
from hf_gptlite.tokenization import (
    TokenizerConfig,
    align_config_with_tokenizer,
    load_gpt2_tokenizer,
    run_train_tokenizer,
    train_bpe_tokenizer,
)

REPO = Path(__file__).resolve().parents[1]
BOS, EOS, PAD = 0, 1, 2
VOCAB = 400


@pytest.fixture(scope="module")
def corpus():
    # ~30 kB of a cleaned novel plus a little of everything else: trains a 400-token BPE in well under a second
    book = clean_book_text(read_text_files(default_corpus_files()[-1])[0])[:30_000]
    return [*book.split("\n"), "desconectado conectado desconexão " * 5, "The quick brown fox. 🙂🙂 漢字漢字"]


@pytest.fixture(scope="module")
def tok(corpus):
    return train_bpe_tokenizer(corpus, vocab_size=VOCAB, show_progress=False)


@pytest.fixture(scope="module")
def tok_bos_eos(corpus):
    return train_bpe_tokenizer(corpus, vocab_size=VOCAB, add_bos=True, add_eos=True, show_progress=False)


# text with special-token look-alikes mixed in
special_looking = st.lists(
    st.one_of(st.text(max_size=8), st.sampled_from(["[BOS]", "[EOS]", "[PAD]", "[EOS", "<|endoftext|>", " ", "\n"])),
    max_size=8,
).map("".join)


def test_special_ids_and_size(tok):
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["[BOS]", "[EOS]", "[PAD]"]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (BOS, EOS, PAD)
    assert len(tok) == VOCAB  # 256 bytes + 3 specials + 141 merges learned from the corpus
    # the full byte alphabet is in the vocabulary
    assert set(ByteLevel.alphabet()) <= set(tok.get_vocab())
    # BPE learned something: a frequent word is fewer tokens than bytes
    assert len(tok.tokenize(" que")) == 1


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_roundtrip_any_unicode(tok, s):
    ids = tok(s)["input_ids"]
    assert all(0 <= i < len(tok) for i in ids)
    assert tok.decode(ids) == s


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), special_looking))
def test_roundtrip_with_bos_eos(tok_bos_eos, s):
    ids = tok_bos_eos(s)["input_ids"]
    assert ids[0] == BOS and ids[-1] == EOS
    assert BOS not in ids[1:-1] and EOS not in ids[1:-1] and PAD not in ids
    assert tok_bos_eos.decode(ids, skip_special_tokens=True) == s
    assert tok_bos_eos.decode(ids) == "[BOS]" + s + "[EOS]"


@settings(max_examples=200, deadline=None)
@given(special_looking)
def test_text_that_looks_special_stays_text(tok, s):
    ids = tok(s)["input_ids"]
    assert not {BOS, EOS, PAD} & set(ids)
    assert tok.decode(ids) == s


def test_literal_special_text_only_on_request(tok):
    assert tok("[EOS]")["input_ids"] != [EOS]
    assert tok("a[EOS]", split_special_tokens=False)["input_ids"][-1] == EOS
    assert tok("[BOS][PAD]", split_special_tokens=False)["input_ids"] == [BOS, PAD]


def test_special_tokens_roundtrip(tok):
    ids = [BOS, *tok("olá")["input_ids"], EOS, PAD]
    assert tok.decode(ids) == "[BOS]olá[EOS][PAD]"
    assert tok.decode(ids, skip_special_tokens=True) == "olá"
    assert tok.convert_tokens_to_ids(["[BOS]", "[EOS]", "[PAD]"]) == [BOS, EOS, PAD]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=30), min_size=1, max_size=6), st.sampled_from(["right", "left"]))
def test_batch_padding(tok_bos_eos, texts, side):
    tok_bos_eos.padding_side = side
    try:
        batch = tok_bos_eos(texts, padding=True)
    finally:
        tok_bos_eos.padding_side = "right"
    width = max(len(tok_bos_eos(t)["input_ids"]) for t in texts)
    for text, ids, mask in zip(texts, batch["input_ids"], batch["attention_mask"], strict=True):
        alone = tok_bos_eos(text)["input_ids"]
        assert len(ids) == len(mask) == width
        n_pad = width - len(alone)
        real = ids[n_pad:] if side == "left" else ids[: len(alone)]
        pads = ids[:n_pad] if side == "left" else ids[len(alone):]
        real_mask = mask[n_pad:] if side == "left" else mask[: len(alone)]
        pad_mask = mask[:n_pad] if side == "left" else mask[len(alone):]
        assert real == alone and pads == [PAD] * n_pad
        assert real_mask == [1] * len(alone) and pad_mask == [0] * n_pad


def test_padding_to_tensors(tok):
    batch = tok(["um", "um dois três quatro"], padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["input_ids"][0, -1].item() == PAD and batch["attention_mask"][0, -1].item() == 0
    assert batch["attention_mask"][1].all()


def test_save_and_reload_through_autotokenizer(tok, tok_bos_eos, tmp_path):
    samples = ["olá, mundo!", "[EOS] não é especial", "desconectado\n\t🙂 漢字", ""]
    for name, t in [("plain", tok), ("wrapped", tok_bos_eos)]:
        t.save_pretrained(tmp_path / name)
        loaded = AutoTokenizer.from_pretrained(tmp_path / name)
        assert loaded.is_fast
        assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (BOS, EOS, PAD)
        for s in samples:
            assert loaded(s)["input_ids"] == t(s)["input_ids"]
            assert loaded.decode(loaded(s)["input_ids"], skip_special_tokens=True) == s
    assert AutoTokenizer.from_pretrained(tmp_path / "wrapped")("a")["input_ids"][::2] == [BOS, EOS]


def test_train_in_seconds_and_reload(tmp_path):
    # a fresh, small training run (not the shared fixture): trains and round-trips through AutoTokenizer
    text = read_text_files(default_corpus_files()[0])[0][:20_000]
    start = time.perf_counter()
    t = train_bpe_tokenizer([text], vocab_size=300, show_progress=False)
    assert time.perf_counter() - start < 10  # about 0.05 s on one core; the bound only catches a hang
    assert len(t) == 300  # the byte alphabet + 3 specials + 41 merges
    assert len(t.tokenize(" que")) == 1 and t.decode(t(text)["input_ids"]) == text
    t.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(text)["input_ids"] == t(text)["input_ids"]


def test_input_kinds_agree(corpus, tok, tmp_path):
    # files, a generator and a datasets column train the same tokenizer as the list of strings
    files = []
    for i in range(0, len(corpus), 100):
        path = tmp_path / f"part{i}.txt"
        path.write_text("".join(corpus[i : i + 100]), encoding="utf-8")
        files.append(path)
    joined = ["".join(corpus[i : i + 100]) for i in range(0, len(corpus), 100)]
    reference = train_bpe_tokenizer(joined, vocab_size=VOCAB, show_progress=False).get_vocab()
    for texts in (files, [str(f) for f in files], (t for t in joined), datasets.Dataset.from_dict({"text": joined})["text"]):
        assert train_bpe_tokenizer(texts, vocab_size=VOCAB, show_progress=False).get_vocab() == reference
    streaming = datasets.Dataset.from_dict({"text": joined}).to_iterable_dataset()["text"]
    assert train_bpe_tokenizer(streaming, vocab_size=VOCAB, show_progress=False).get_vocab() == reference


def test_custom_special_tokens():
    t = train_bpe_tokenizer(["abc abc"] * 3, vocab_size=270, special_tokens=("<s>", "</s>", "<pad>", "<sep>"), show_progress=False)
    assert t.convert_ids_to_tokens([0, 1, 2, 3]) == ["<s>", "</s>", "<pad>", "<sep>"]
    assert (t.bos_token, t.eos_token, t.pad_token) == ("<s>", "</s>", "<pad>")
    assert t("<sep>")["input_ids"] != [3]


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="at least 259"):
        train_bpe_tokenizer(["abc"], vocab_size=258, show_progress=False)
    train_bpe_tokenizer(["abc"], vocab_size=259, show_progress=False)  # the smallest valid size
    with pytest.raises(ValueError, match="empty"):
        train_bpe_tokenizer([], vocab_size=300, show_progress=False)
    with pytest.raises(ValueError, match="empty"):
        train_bpe_tokenizer(["", "  \n"], vocab_size=300, show_progress=False)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        train_bpe_tokenizer([tmp_path / "missing.txt"], vocab_size=300, show_progress=False)
    real = tmp_path / "real.txt"
    real.write_text("texto", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="not an existing file"):
        train_bpe_tokenizer([str(real), "gone.txt"], vocab_size=300, show_progress=False)
    with pytest.raises(TypeError, match="single string"):
        train_bpe_tokenizer("abc", vocab_size=300, show_progress=False)
    with pytest.raises(TypeError, match="int"):
        train_bpe_tokenizer(["ok", 3], vocab_size=300, show_progress=False)
    with pytest.raises(ValueError, match="distinct"):
        train_bpe_tokenizer(["abc"], vocab_size=300, special_tokens=("[A]", "[A]", "[B]"), show_progress=False)


# --- GPT-2 tokenizer -------------------------------------------------------------------------------------------


@pytest.fixture
def gpt2_dir(tmp_path):
    """A tiny GPT-2-format tokenizer (vocab.json + merges.txt): the 256 byte symbols, 3 merges, <|endoftext|>."""
    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)  # 259, like 50256 in the real one: the last id
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return tmp_path


def test_load_gpt2_tokenizer(gpt2_dir, tmp_path):
    t = load_gpt2_tokenizer(gpt2_dir)
    assert len(t) == 260
    assert t.eos_token == t.pad_token == "<|endoftext|>" and t.eos_token_id == t.pad_token_id == 259
    assert t.tokenize(" the") == ["Ġthe"]
    assert 259 not in t("x<|endoftext|>")["input_ids"]
    assert t("x<|endoftext|>", split_special_tokens=False)["input_ids"][-1] == 259
    assert load_gpt2_tokenizer(gpt2_dir, split_special_tokens=False)("<|endoftext|>")["input_ids"] == [259]
    batch = t(["the", "a the b"], padding=True)
    assert batch["input_ids"][0][-1] == 259 and batch["attention_mask"][0][-1] == 0
    s = " naïve 🙂\x00 the\r\n"
    assert t.decode(t(s)["input_ids"]) == s
    # a saved copy loads through the same helper (tokenizer.json path) and through AutoTokenizer
    t.save_pretrained(tmp_path / "saved")
    again = load_gpt2_tokenizer(tmp_path / "saved")
    assert again(s)["input_ids"] == t(s)["input_ids"] and again.pad_token_id == 259
    assert AutoTokenizer.from_pretrained(tmp_path / "saved")(s)["input_ids"] == t(s)["input_ids"]


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_gpt2_roundtrip(gpt2_tok, s):
    assert gpt2_tok.decode(gpt2_tok(s)["input_ids"]) == s


@pytest.fixture(scope="module")
def gpt2_tok(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2")
    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return load_gpt2_tokenizer(folder)


def test_load_gpt2_errors(gpt2_dir, tmp_path):
    (gpt2_dir / "merges.txt").unlink()
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        load_gpt2_tokenizer(gpt2_dir)
    with pytest.raises(ValueError, match="is a file"):
        load_gpt2_tokenizer(gpt2_dir / "vocab.json")


# --- config alignment ------------------------------------------------------------------------------------------


def test_align_fresh_config(tok):
    config = align_config_with_tokenizer(GPTLiteConfig.from_preset("tiny"), tok)
    assert (config.vocab_size, config.bos_token_id, config.eos_token_id, config.pad_token_id) == (VOCAB, 0, 1, 2)
    config = align_config_with_tokenizer(GPTLiteConfig.from_preset("gpt2-small"), tok)  # a fresh model: all follow
    assert (config.vocab_size, config.bos_token_id, config.eos_token_id, config.pad_token_id) == (VOCAB, 0, 1, 2)


def test_align_fixed_vocab(tok, gpt2_dir):
    gpt2 = load_gpt2_tokenizer(gpt2_dir)
    config = GPTLiteConfig.from_preset("tiny", vocab_size=len(gpt2), bos_token_id=259, eos_token_id=259, pad_token_id=None)
    align_config_with_tokenizer(config, gpt2, fixed_vocab=True)
    assert (config.vocab_size, config.eos_token_id, config.pad_token_id) == (260, 259, 259)
    # weights trained with eos=259 cannot take a tokenizer whose eos is 1
    config = GPTLiteConfig.from_preset("tiny", vocab_size=VOCAB, bos_token_id=0, eos_token_id=259)
    with pytest.raises(ValueError, match="eos_token_id=259 but the tokenizer's is 1"):
        align_config_with_tokenizer(config, tok, fixed_vocab=True)
    # an embedding with fewer rows than the tokenizer has tokens
    with pytest.raises(ValueError, match="400 tokens but the model's vocab_size is 300"):
        align_config_with_tokenizer(GPTLiteConfig.from_preset("tiny", vocab_size=300), tok, fixed_vocab=True)
    # a larger embedding (GPT-2 style padding of the vocab) is fine
    config = align_config_with_tokenizer(GPTLiteConfig.from_preset("tiny", vocab_size=512), tok, fixed_vocab=True)
    assert (config.vocab_size, config.pad_token_id) == (512, 2)


# --- the recipe ------------------------------------------------------------------------------------------------


def _run_recipe(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(REPO / "recipes" / "train_tokenizer.py"), *args],
        capture_output=True, text=True, env=env, timeout=120,
    )


def test_recipe_end_to_end(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("o rato roeu a roupa do rei de Roma\n" * 50, encoding="utf-8")
    b.write_text("três pratos de trigo para três tigres tristes\n" * 50, encoding="utf-8")
    out = tmp_path / "tok"
    result = _run_recipe("--files", str(a), str(b), "--vocab_size", "300", "--add_eos", "--output_dir", str(out))
    assert result.returncode == 0, result.stderr
    loaded = AutoTokenizer.from_pretrained(out)
    assert len(loaded) == 300 and loaded.pad_token_id == PAD
    ids = loaded(" tigres tristes")["input_ids"]
    assert ids[-1] == EOS and loaded.decode(ids, skip_special_tokens=True) == " tigres tristes"


def test_recipe_yaml_config_and_errors(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text(read_text_files(default_corpus_files()[0])[0][:5_000], encoding="utf-8")
    config_file = tmp_path / "tok.yaml"
    config_file.write_text(f"output_dir: {tmp_path / 'out'}\nfiles: [{text}]\nvocab_size: 270\n", encoding="utf-8")
    config = parse_config(TokenizerConfig, ["--config", str(config_file), "--vocab_size", "280"])
    assert (config.files, config.vocab_size) == ([str(text)], 280)  # the CLI wins over the YAML
    assert len(run_train_tokenizer(parse_config(TokenizerConfig, ["--config", str(config_file)]))) == 270
    assert AutoTokenizer.from_pretrained(tmp_path / "out").eos_token_id == EOS

    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    for args, message in [
        (["--files", str(tmp_path / "nope.txt")], "not found"),
        (["--files", str(empty)], "empty"),
        (["--files", str(text), "--vocab_size", "100"], "at least 259"),
    ]:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            run_train_tokenizer(parse_config(TokenizerConfig, [*args, "--output_dir", str(tmp_path / "bad")]))
    no_files = tmp_path / "no_files.yaml"
    no_files.write_text(f"output_dir: {tmp_path / 'bad'}\nfiles: []\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no file"):
        run_train_tokenizer(parse_config(TokenizerConfig, ["--config", str(no_files)]))
    capsys.readouterr()
    assert run_command("train_tokenizer", ["--files", str(tmp_path / "nope.txt"), "--output_dir", str(tmp_path / "bad")]) == 2
    assert "error: text file not found" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
