"""SMS spam data: the shipped SMS Spam Collection (or any labelled CSV/TSV/Hub data set), balancing, a
stratified, seeded train/validation/test split written to disk so every run and the benchmark share it, and the
tokenized, padded batches the classifier trains on.

    >>> from hf_gptlite.spam.data import prepare_sms_splits
    >>> splits = prepare_sms_splits("runs/sms_split", balanced=True, seed=123)   # DatasetDict
    >>> splits["test"].num_rows, splits["test"].features["label"].names
    (299, ['ham', 'spam'])

The SMS Spam Collection v.1 is by Tiago A. Almeida, José María Gómez Hidalgo and Akebo Yamakami
("Contributions to the Study of SMS Spam Filtering: New Collection and Results", ACM DocEng 2011),
distributed by the UCI Machine Learning Repository under CC BY 4.0; see resources/sms_spam/readme.txt.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, concatenate_datasets

from ..errors import InputValueError, MissingInputError, NotAFileError

LABELS = ("ham", "spam")  # id 0 = ham, id 1 = spam
SPLIT_NAMES = ("train", "validation", "test")
SPLIT_INFO = "split_info.json"


def default_sms_path() -> Path:
    """The SMS Spam Collection shipped inside the package (5,574 rows: 4,827 ham, 747 spam)."""
    return Path(__file__).resolve().parent.parent / "resources" / "sms_spam" / "SMSSpamCollection.tsv"


def features(labels=LABELS) -> Features:
    return Features({"text": Value("string"), "label": ClassLabel(names=list(labels))})


def read_label_tab_text(path: str | os.PathLike, labels=LABELS) -> Dataset:
    """Read the collection's raw format, one `label<TAB>text` per line, without a header.

    Each line is split on its *first* tab only and no quoting is applied, so messages that start with a
    quote character (54 in the collection) or contain tabs are kept whole — a CSV reader would merge them.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"SMS data file not found: {path}")
    _read_utf8(path)  # not UTF-8: one clear error naming the byte
    texts, label_ids = [], []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if "\t" not in line:
                raise InputValueError(f"{path}:{lineno}: malformed row, expected 'label<TAB>text': {line[:80]!r}")
            label, text = line.split("\t", 1)
            texts.append(text)
            label_ids.append(_label_id(label, labels, f"{path}:{lineno}"))
    if not texts:
        raise InputValueError(f"{path} holds no rows")
    return Dataset.from_dict({"text": texts, "label": label_ids}, features=features(labels))


def _read_utf8(path: Path) -> str:
    """The text of ``path``; a file that is not UTF-8 is a user error naming the file and the byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputValueError(f"{path} is not valid UTF-8 (byte {e.start}: {data[e.start:e.start + 4]!r}); "
                              "convert it first, e.g. `iconv -f latin1 -t utf-8`") from None


def _label_id(value, labels, where: str) -> int:
    """Map a label given as a name ('spam', ' Ham ') or an id (1, '1') to its id in `labels`."""
    key = str(value).strip().lower()
    names = [name.lower() for name in labels]
    if key in names:
        return names.index(key)
    if key.isdigit() and int(key) < len(labels):
        return int(key)
    raise InputValueError(f"{where}: unknown label {value!r}; expected one of {list(labels)} (or ids 0..{len(labels) - 1})")


def _looks_like_raw_collection(path: Path, labels) -> bool:
    """True for a headerless `label<TAB>text` file such as the original SMSSpamCollection."""
    _read_utf8(path)
    with path.open(encoding="utf-8") as f:
        first = f.readline()
    return "\t" in first and first.split("\t", 1)[0].strip().lower() in [name.lower() for name in labels]


def load_labelled_texts(
    source: str | os.PathLike | None = None,
    text_column: str = "text",
    label_column: str = "label",
    labels=LABELS,
) -> Dataset:
    """Load labelled messages as a Dataset with columns `text` (str) and `label` (ClassLabel ham/spam).

    `source` is None (the shipped collection), a raw `label<TAB>text` file, a CSV/TSV/JSON(L) file with a
    header naming `text_column` and `label_column`, or a Hub data set id (all its splits are pooled and
    re-split by `split_dataset`).
    """
    if source is None:
        return read_label_tab_text(default_sms_path(), labels)
    path = Path(source)
    if path.is_file():
        if not path.read_bytes().strip():
            raise InputValueError(f"{path} is empty")
        if path.suffix.lower() in (".tsv", ".txt", "") and _looks_like_raw_collection(path, labels):
            return read_label_tab_text(path, labels)
        from datasets import load_dataset

        builder = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json"}.get(path.suffix.lower())
        if builder is None:
            raise InputValueError(f"{path}: unsupported file type {path.suffix!r}; use .csv, .tsv, .json or .jsonl")
        from datasets.exceptions import DatasetGenerationError

        kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
        _check_table_file(path, kwargs.get("delimiter", ","), builder)  # name the bad line, before the builder
        try:
            raw = load_dataset(builder, data_files=str(path), split="train", **kwargs)
        except DatasetGenerationError as err:  # what the checks above did not catch
            cause = err.__cause__ or err
            raise InputValueError(f"{path} is not a readable {builder.upper()} file: "
                                  f"{type(cause).__name__}: {cause}") from err
    elif path.exists():
        raise NotAFileError(f"{path} is a folder, not a data file")
    else:  # a Hub data set id
        from datasets import load_dataset

        from ..loading import resolve_source

        resolve_source(str(source), "data set", repo_type="dataset")  # neither a file nor a Hub id: say so
        loaded = load_dataset(str(source))
        raw = concatenate_datasets(list(loaded.values())) if isinstance(loaded, DatasetDict) else loaded
    return _normalise(raw, str(source), text_column, label_column, labels)


def _check_table_file(path: Path, delimiter: str, builder: str) -> None:
    """A CSV/TSV file whose rows all have the header's number of fields, or a JSON list / JSON-lines file of
    objects; otherwise an error naming the file and the line."""
    import csv
    import io

    text = _read_utf8(path)
    if builder == "csv":
        rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        try:
            header = next(rows, None)
            for row in rows:
                if row and len(row) != len(header):
                    raise InputValueError(f"{path}:{rows.line_num}: malformed row, {len(row)} fields where the header "
                                          f"has {len(header)} ({header})")
        except csv.Error as err:
            raise InputValueError(f"{path}:{rows.line_num}: malformed {'TSV' if delimiter == chr(9) else 'CSV'}: "
                                  f"{err}") from None
        return
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, list):
        bad = next((i for i, r in enumerate(whole) if not isinstance(r, dict)), None)
        if bad is not None:
            raise InputValueError(f"{path}: item {bad} is not a JSON object")
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputValueError(f"{path}:{lineno}: not valid JSON ({err.msg}); expected one JSON object per "
                                  "line or a JSON list of objects") from None
        if not isinstance(row, dict):
            raise InputValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")


def _normalise(raw: Dataset, where: str, text_column: str, label_column: str, labels) -> Dataset:
    missing = [c for c in (text_column, label_column) if c not in raw.column_names]
    if missing:
        raise InputValueError(f"{where}: missing column(s) {missing}; columns are {raw.column_names} "
                         "(choose them with --text_column / --label_column)")
    if raw.num_rows == 0:
        raise InputValueError(f"{where} holds no rows")
    label_feature = raw.features[label_column]
    values = raw[label_column]
    if isinstance(label_feature, ClassLabel):  # e.g. a Hub set whose ids follow its own names
        values = [label_feature.int2str(v) for v in values]
    texts = raw[text_column]
    label_ids = []
    for i, (text, value) in enumerate(zip(texts, values)):
        if not isinstance(text, str) or value is None:
            raise InputValueError(f"{where}: row {i}: malformed row (text={text!r}, label={value!r})")
        label_ids.append(_label_id(value, labels, f"{where}: row {i}"))
    return Dataset.from_dict({"text": list(texts), "label": label_ids}, features=features(labels))


def balance(dataset: Dataset, seed: int) -> Dataset:
    """Down-sample every class to the size of the smallest one (747 ham + 747 spam, as in the book)."""
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(dataset["label"]):
        by_label.setdefault(label, []).append(i)
    n = min(len(rows) for rows in by_label.values())
    parts = [dataset.select(rows).shuffle(seed=seed).select(range(n)) for _, rows in sorted(by_label.items())]
    return concatenate_datasets(parts).shuffle(seed=seed)


def split_dataset(dataset: Dataset, seed: int, validation_fraction: float = 0.1, test_fraction: float = 0.2) -> DatasetDict:
    """Stratified train/validation/test split (70/10/20 by default) with a fixed seed; loses no row."""
    if not (0 < validation_fraction < 1 and 0 < test_fraction < 1 and validation_fraction + test_fraction < 1):
        raise ValueError(f"bad split fractions: validation={validation_fraction}, test={test_fraction}")
    first = dataset.train_test_split(test_size=test_fraction, stratify_by_column="label", seed=seed)
    rest = first["train"].train_test_split(
        test_size=validation_fraction / (1 - test_fraction), stratify_by_column="label", seed=seed
    )
    return DatasetDict(train=rest["train"], validation=rest["test"], test=first["test"])


def write_splits(splits: DatasetDict, directory: str | os.PathLike, info: dict) -> Path:
    """Write `train/validation/test.jsonl` + `split_info.json` (counts per label and the recipe that made them)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = splits["train"].features["label"].names
    for name in SPLIT_NAMES:
        tmp = directory / f"{name}.jsonl.tmp"
        with tmp.open("w", encoding="utf-8") as f:
            for row in splits[name]:
                f.write(json.dumps({"text": row["text"], "label": names[row["label"]]}, ensure_ascii=False) + "\n")
        os.replace(tmp, directory / f"{name}.jsonl")
    counts = {name: dict(Counter(names[i] for i in splits[name]["label"])) for name in SPLIT_NAMES}
    info = {**info, "labels": names, "counts": counts}
    tmp = directory / (SPLIT_INFO + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, directory / SPLIT_INFO)  # written last: its presence marks a complete split
    return directory


def read_splits(directory: str | os.PathLike) -> DatasetDict:
    """Read a split written by `write_splits`."""
    directory = Path(directory)
    info_path = directory / SPLIT_INFO
    if not info_path.is_file():
        raise MissingInputError(f"no {SPLIT_INFO} in {directory}: not a split written by prepare_sms_splits")
    labels = json.loads(info_path.read_text())["labels"]
    out = {}
    for name in SPLIT_NAMES:
        rows = [json.loads(line) for line in (directory / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
        out[name] = Dataset.from_dict(
            {"text": [r["text"] for r in rows], "label": [labels.index(r["label"]) for r in rows]},
            features=features(labels),
        )
    return DatasetDict(out)


def prepare_sms_splits(
    split_dir: str | os.PathLike,
    source: str | os.PathLike | None = None,
    balanced: bool = True,
    seed: int = 123,
    text_column: str = "text",
    label_column: str = "label",
    validation_fraction: float = 0.1,
    test_fraction: float = 0.2,
    dataset: Dataset | None = None,
) -> DatasetDict:
    """Load, (optionally) balance, split and write the data to `split_dir` — or reuse the split already there.

    A split written earlier with the same settings is read back unchanged; one written with other settings
    raises instead of being silently mixed with this run. ``dataset``: the rows of ``source`` when the caller
    has already loaded them (``load_labelled_texts``).
    """
    info = {
        "source": str(source) if source is not None else "SMSSpamCollection (shipped)",
        "text_column": text_column, "label_column": label_column,
        "balanced": balanced, "seed": seed,
        "validation_fraction": validation_fraction, "test_fraction": test_fraction,
    }
    info_path = Path(split_dir) / SPLIT_INFO
    if info_path.is_file():
        old = json.loads(info_path.read_text())
        diff = {k: (old.get(k), v) for k, v in info.items() if old.get(k) != v}
        if diff:
            raise InputValueError(f"{split_dir} holds a split made with other settings {diff} (old, new); "
                             "use another split_dir or delete it")
        return read_splits(split_dir)
    if dataset is None:
        dataset = load_labelled_texts(source, text_column, label_column)
    if balanced:
        dataset = balance(dataset, seed)
    splits = split_dataset(dataset, seed, validation_fraction, test_fraction)
    write_splits(splits, split_dir, {**info, "num_rows": dataset.num_rows})
    return splits


# ---- tokenized batches ------------------------------------------------------------------------
def tokenize_split(dataset, tokenizer, max_length: int | None = None):
    """`text` -> input_ids / attention_mask (truncated to the context length); keeps `label`."""
    max_length = max_length or tokenizer.model_max_length
    return dataset.map(lambda b: tokenizer(b["text"], truncation=True, max_length=max_length),
                       batched=True, remove_columns=["text"], desc="tokenize")


def classification_dataloader(tokenized, tokenizer, batch_size: int, shuffle: bool, seed: int = 0):
    """Batches padded to their longest message by transformers' DataCollatorWithPadding (`label` -> `labels`).

    No length grouping: in SMS spam the length predicts the label (spam is longer), so length-grouped batches are
    nearly one class each — tried here, it left a tiny model at chance (49.8%) where shuffled batches gave 95.7%.
    """
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding

    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(tokenized, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      collate_fn=DataCollatorWithPadding(tokenizer, return_tensors="pt"))


__all__ = [
    "LABELS", "balance", "classification_dataloader", "default_sms_path", "load_labelled_texts", "prepare_sms_splits",
    "read_label_tab_text", "read_splits", "split_dataset", "tokenize_split", "write_splits",
]
