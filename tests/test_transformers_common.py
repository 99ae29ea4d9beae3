"""transformers' own common model tests, run against GPTLite.

``ModelTesterMixin`` (tests/test_modeling_common.py) and ``GenerationTesterMixin`` (tests/generation/test_utils.py)
are not in the transformers wheel. The source distribution of the *installed* version is fetched from PyPI the first
time (``pip download``) and its ``tests/`` unpacked into ``~/.cache/hf_gptlite/transformers-<version>-tests``, reused
after that; nothing of it is copied into this repository. Skipped, with the reason, when PyPI cannot be reached or
the test-only dependency ``parameterized`` is missing.

The sdist ships only the top-level ``tests/*.py``: ``tests/generation/`` and ``tests/exporters/``, which
``test_modeling_common`` imports, are not in it. Empty stand-ins take their place, and one skipped test for each says
so; point ``HF_GPTLITE_TRANSFORMERS_TESTS`` at the ``tests/`` folder of a transformers checkout of the installed
version to run those mixins too. test_model_conventions.py checks the decoding strategies against GPT-2 meanwhile.
"""

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
import unittest
import warnings
from pathlib import Path
from unittest import mock

import pytest
import transformers
from transformers.models.auto import modeling_auto as auto

from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM, GPTLiteForSequenceClassification, GPTLiteModel

pytest.importorskip("parameterized", reason="transformers' common tests need `parameterized` (pip install parameterized)")

PACKAGE = "transformers_common_tests"  # the name the sdist's tests/ folder is imported under
# what test_modeling_common imports that the sdist does not ship: module -> the mixin class it takes from it
NOT_IN_SDIST = {"exporters.test_export": "ExportTesterMixin", "generation.test_utils": "GenerationTesterMixin"}
# the test that is skipped, saying why, while that module is a stand-in
STAND_IN_MARKERS = {"exporters.test_export": "test_export_tester_mixin_present",
                    "generation.test_utils": "test_generation_tester_mixin_present"}


def _fetch_sdist_tests(dest: Path) -> None:
    """pip download the sdist of the installed transformers; unpack its tests/*.py as the package folder dest."""
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
               f"transformers=={transformers.__version__}", "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        sdists = list(Path(tmp).glob("transformers-*.tar.gz"))
        if proc.returncode != 0 or not sdists:
            raise RuntimeError((proc.stderr.strip().splitlines() or ["no sdist downloaded"])[-1])
        with tarfile.open(sdists[0]) as tar:
            members = [m for m in tar.getmembers()
                       if m.isfile() and m.name.endswith(".py") and m.name.split("/")[1:2] == ["tests"]]
            if not members:
                raise RuntimeError(f"{sdists[0].name} has no tests/ folder")
            tar.extractall(tmp, members=members, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        tests = Path(tmp) / members[0].name.split("/")[0] / "tests"
        for folder in {p.parent for p in tests.rglob("*.py")}:
            (folder / "__init__.py").touch()
        shutil.rmtree(dest, ignore_errors=True)
        tests.rename(dest)  # last: a folder that exists is complete


def _common_tests_package() -> tuple[str, list[str]]:
    """Make a transformers tests/ folder importable; return its package name and the modules stood in for."""
    checkout = os.environ.get("HF_GPTLITE_TRANSFORMERS_TESTS")
    if checkout:  # a transformers checkout's tests/ folder: everything is there
        sys.path.insert(0, str(Path(checkout).resolve().parent))
        return Path(checkout).resolve().name, []
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    cache = cache / "hf_gptlite" / f"transformers-{transformers.__version__}-tests"
    if not (cache / PACKAGE / "test_modeling_common.py").exists():
        cache.mkdir(parents=True, exist_ok=True)
        try:
            _fetch_sdist_tests(cache / PACKAGE)
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
            pytest.skip(f"could not fetch transformers {transformers.__version__}'s sdist from PyPI: {e}",
                        allow_module_level=True)
    sys.path.insert(0, str(cache))
    stand_ins = [m for m in NOT_IN_SDIST if not (cache / PACKAGE / f"{m.replace('.', '/')}.py").exists()]
    for module in stand_ins:  # an empty mixin, so that test_modeling_common imports; its tests are reported below
        parent, name = f"{PACKAGE}.{module}".rsplit(".", 1)
        sys.modules.setdefault(parent, types.ModuleType(parent)).__path__ = []
        sys.modules[f"{parent}.{name}"] = types.ModuleType(f"{parent}.{name}")
        setattr(sys.modules[f"{parent}.{name}"], NOT_IN_SDIST[module], type(NOT_IN_SDIST[module], (), {}))
    return PACKAGE, stand_ins


_package, STAND_INS = _common_tests_package()
with warnings.catch_warnings():  # its pytest marks (flash_attn_test ...) are registered in transformers' conftest
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    common = importlib.import_module(f"{_package}.test_modeling_common")
ModelTesterMixin = common.ModelTesterMixin
GenerationTesterMixin = sys.modules[f"{_package}.generation.test_utils"].GenerationTesterMixin
ExportTesterMixin = sys.modules[f"{_package}.exporters.test_export"].ExportTesterMixin


class GPTLiteModelTester:
    """A tiny config and inputs, in the shape transformers' model testers (e.g. GPT2ModelTester) give them."""

    def __init__(self, parent, batch_size=2, seq_length=7, vocab_size=99, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=4, intermediate_size=37, max_position_embeddings=64, is_training=True):
        self.parent = parent
        self.batch_size, self.seq_length, self.is_training = batch_size, seq_length, is_training
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.num_hidden_layers, self.num_attention_heads = num_hidden_layers, num_attention_heads
        self.intermediate_size, self.max_position_embeddings = intermediate_size, max_position_embeddings
        self.base_model_class = GPTLiteModel

    def get_config(self):
        return GPTLiteConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position_embeddings, hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1, bos_token_id=0, eos_token_id=1, pad_token_id=2,
        )

    def prepare_config_and_inputs_for_common(self):
        input_ids = common.ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        attention_mask = common.random_attention_mask([self.batch_size, self.seq_length])
        return self.get_config(), {"input_ids": input_ids, "attention_mask": attention_mask}


class GPTLiteModelTest(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    all_model_classes = (GPTLiteModel, GPTLiteForCausalLM, GPTLiteForSequenceClassification)
    test_can_init_all_missing_weights_before_2023 = True  # the check is skipped for models older than 2023

    def setUp(self):
        self.model_tester = GPTLiteModelTester(self)
        # The mixins pick labels and which classes to train from transformers' own model-name tables; list
        # GPTLite there for the duration of each test, as a model shipped inside transformers would be.
        for table, name in ((auto.MODEL_MAPPING_NAMES, "GPTLiteModel"),
                            (auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, "GPTLiteForCausalLM"),
                            (auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES, "GPTLiteForSequenceClassification")):
            self.enterContext(mock.patch.dict(table, {"gptlite": name}))

    def test_generation_tester_mixin_present(self):
        self.assertTrue(any(name.startswith("test_") for name in dir(GenerationTesterMixin)))

    def test_export_tester_mixin_present(self):
        self.assertTrue(any(name.startswith("test_") for name in dir(ExportTesterMixin)))


# Every skip added here, with its reason. The mixins' tests all run; those that skip themselves say why
# ("test requires accelerator", "Model does not have a TP plan." ...).
SKIPS = {
    STAND_IN_MARKERS[module]: f"{NOT_IN_SDIST[module]} is not in transformers {transformers.__version__}'s sdist "
        f"(tests/{module.replace('.', '/')}.py): set HF_GPTLITE_TRANSFORMERS_TESTS to a transformers checkout's "
        "tests/ folder to run its tests"
    for module in STAND_INS
}
for _name, _reason in SKIPS.items():
    setattr(GPTLiteModelTest, _name, unittest.skip(_reason)(getattr(GPTLiteModelTest, _name)))
