"""SMS spam data: parsing keeps every row, the split is stratified, seeded, written out and reused."""

import json

import pytest

from hf_gptlite.spam.data import (
    balance,
    load_labelled_texts,
    prepare_sms_splits,
    read_label_tab_text,
    read_splits,
)


@pytest.fixture(scope="module")
def collection():
    return load_labelled_texts()


def test_shipped_collection_parses_every_row(collection):
    labels = list(collection["label"])
    assert collection.num_rows == 5574
    assert labels.count(0) == 4827 and labels.count(1) == 747
    # the rows a CSV reader would mangle: messages that open with a quote character
    assert sum(t.startswith('"') for t in list(collection["text"])) == 54
    assert collection.features["label"].names == ["ham", "spam"]


def test_balanced_split_is_stratified_complete_and_deterministic(tmp_path, collection):
    a = prepare_sms_splits(tmp_path / "a", balanced=True, seed=123)
    b = prepare_sms_splits(tmp_path / "b", balanced=True, seed=123)
    sizes = {name: a[name].num_rows for name in a}
    assert sum(sizes.values()) == 2 * 747
    assert sizes == {"train": 1045, "validation": 150, "test": 299}
    for name in a:  # stratified: both classes within one row of half
        assert abs(list(a[name]["label"]).count(1) - a[name].num_rows / 2) <= 1
        assert list(a[name]["text"]) == list(b[name]["text"]) and list(a[name]["label"]) == list(b[name]["label"])
    # the split files are byte-identical for the same seed, and differ for another seed
    for name in ("train", "validation", "test"):
        assert (tmp_path / "a" / f"{name}.jsonl").read_bytes() == (tmp_path / "b" / f"{name}.jsonl").read_bytes()
    c = prepare_sms_splits(tmp_path / "c", balanced=True, seed=7)
    assert list(c["test"]["text"]) != list(a["test"]["text"])
    # no message appears in two splits; every spam message of the collection is used exactly once
    all_texts = list(a["train"]["text"]) + list(a["validation"]["text"]) + list(a["test"]["text"])
    spam = [t for t, y in zip(list(collection["text"]), list(collection["label"])) if y == 1]
    used_spam = [t for name in a for t, y in zip(list(a[name]["text"]), list(a[name]["label"])) if y == 1]
    assert sorted(used_spam) == sorted(spam)
    assert len(all_texts) == 1494


def test_full_split_loses_no_row(tmp_path, collection):
    full = prepare_sms_splits(tmp_path / "full", balanced=False, seed=123)
    rows = sorted(zip(sum((list(full[n]["text"]) for n in full), []), sum((list(full[n]["label"]) for n in full), [])))
    assert rows == sorted(zip(list(collection["text"]), list(collection["label"])))
    assert full["train"].num_rows == 3901 and full["validation"].num_rows == 558 and full["test"].num_rows == 1115
    info = json.loads((tmp_path / "full" / "split_info.json").read_text())
    assert info["counts"]["test"] == {"ham": 966, "spam": 149}


def test_split_is_reused_and_refuses_other_settings(tmp_path):
    first = prepare_sms_splits(tmp_path / "s", seed=1)
    assert list(read_splits(tmp_path / "s")["test"]["text"]) == list(first["test"]["text"])
    (tmp_path / "s" / "test.jsonl").write_text(json.dumps({"text": "edited", "label": "spam"}) + "\n")
    assert list(prepare_sms_splits(tmp_path / "s", seed=1)["test"]["text"]) == ["edited"]  # read back, not remade
    with pytest.raises(ValueError, match="other settings"):
        prepare_sms_splits(tmp_path / "s", seed=2)


def test_balance_downsamples_majority():
    from datasets import Dataset

    ds = Dataset.from_dict({"text": [str(i) for i in range(10)], "label": [0] * 8 + [1] * 2})
    out = balance(ds, seed=0)
    assert sorted(list(out["label"])) == [0, 0, 1, 1]


def test_raw_file_errors(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_labelled_texts(empty)
    bad = tmp_path / "bad.tsv"
    bad.write_text("ham\tok then\nspam no tab here\n")
    with pytest.raises(ValueError, match=r"bad.tsv:2: malformed row"):
        read_label_tab_text(bad)
    unknown = tmp_path / "unknown.tsv"
    unknown.write_text("ham\tfine\nphishing\tclick here\n")
    with pytest.raises(ValueError, match=r"unknown.tsv:2: unknown label 'phishing'"):
        load_labelled_texts(unknown)
    with pytest.raises(FileNotFoundError):
        read_label_tab_text(tmp_path / "missing.tsv")


def test_csv_with_named_columns(tmp_path):
    path = tmp_path / "msgs.csv"
    path.write_text('message,category\n"Hi, are you home?",ham\n"WIN cash now, txt 8888",SPAM\n"see you",0\n')
    ds = load_labelled_texts(path, text_column="message", label_column="category")
    assert list(ds["text"]) == ["Hi, are you home?", "WIN cash now, txt 8888", "see you"]
    assert list(ds["label"]) == [0, 1, 0]
    with pytest.raises(ValueError, match=r"missing column\(s\) \['text'\]"):
        load_labelled_texts(path, text_column="text", label_column="category")
