import os
import tempfile
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

torch.set_num_threads(min(2, torch.get_num_threads()))
# pretraining caches its tokens (hf_gptlite/data/token_cache.py): here in a folder of this session, not in $HF_HOME
os.environ.setdefault("HF_GPTLITE_TOKEN_CACHE", tempfile.mkdtemp(prefix="gptlite_token_cache_"))

REPO = Path(__file__).resolve().parents[1]

SAMPLE_TEXT = (
    "O rato roeu a roupa do rei de Roma. The quick brown fox jumps over the lazy dog. "
    "Capitu tinha olhos de cigana oblíqua e dissimulada. Spam: WIN a FREE prize now!!! call 0800 "
) * 20


# Prepended to `python -c` scripts: makes `import hf_gptlite` fail, to prove a saved folder stands alone.
IMPORT_BLOCKER = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "hf_gptlite" or name.startswith("hf_gptlite."):
            raise ImportError("hf_gptlite is blocked in this process")
sys.meta_path.insert(0, _Block())
"""


def run_without_hf_gptlite(script: str, tmp_path):
    """Run `script` in a fresh interpreter where hf_gptlite cannot be imported (empty HF_HOME, offline);
    assert it succeeded and return the completed process."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", IMPORT_BLOCKER + script], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def random_gpt2(seed=0, scale=6.0, **shape):
    """A randomly initialised transformers GPT-2 whose weights are scaled up so greedy outputs vary."""
    torch.manual_seed(seed)
    cfg = dict(vocab_size=320, n_positions=96, n_embd=64, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=1,
               pad_token_id=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    cfg.update(shape)
    model = GPT2LMHeadModel(GPT2Config(**cfg))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                p.mul_(scale)
    return model.eval()


@pytest.fixture(scope="session")
def byte_tokenizer():
    """A small byte-level BPE tokenizer built directly with `tokenizers` ([BOS]=0, [EOS]=1, [PAD]=2)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["[BOS]", "[EOS]", "[PAD]"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([SAMPLE_TEXT], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]", pad_token="[PAD]")


# ---- the precision of the tiny runs ---------------------------------------------------------------------
# GPTLITE_TEST_MIXED_PRECISION=no|bf16 forces it in the runs built by the helpers below (TINY_FLAGS, tiny_pretrain_cfg,
# tiny_trainer, PRECISION_FLAGS / precision_overrides in the task tests); unset, each config keeps its own (auto: bf16
# on this CPU, fp32 on AVX2-only ones). The key loop tests are parametrized over both anyway.
FORCED_PRECISION = os.environ.get("GPTLITE_TEST_MIXED_PRECISION") or None
PRECISION_FLAGS = ["--mixed_precision", FORCED_PRECISION] if FORCED_PRECISION else []


def precision_overrides() -> dict:
    return {"mixed_precision": FORCED_PRECISION} if FORCED_PRECISION else {}


# ---- a tiny pretraining set-up shared by the training-loop and pretraining tests ------------------------
TINY_FLAGS = [
    "--model_preset", "tiny", "--block_size", "32", "--per_device_batch_size", "8", "--logging_steps", "2",
    "--max_train_minutes", "0", "--report_to", "none", "--sample_max_new_tokens", "8", *PRECISION_FLAGS,
]


def recipe_env():
    """The environment of a recipe run in a subprocess: the checkout importable, one thread per process."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    return env


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """Two small 'books' (slices of the embedded novels) and a 300-token tokenizer trained on them."""
    from hf_gptlite.data.text import default_corpus_files
    from hf_gptlite.pretrain.data import load_text_documents
    from hf_gptlite.tokenization import train_bpe_tokenizer

    folder = tmp_path_factory.mktemp("corpus")
    files = []
    for i, path in enumerate(default_corpus_files()[:2]):
        text = path.read_text(encoding="utf-8")[20_000:50_000]
        files.append(folder / f"book{i}.txt")
        files[-1].write_text(text, encoding="utf-8")
    train_docs, _ = load_text_documents(files, clean=True)
    tokenizer = train_bpe_tokenizer(train_docs, vocab_size=300, show_progress=False)
    tokenizer.save_pretrained(folder / "tokenizer")
    return {"files": [str(f) for f in files], "tokenizer": tokenizer, "tokenizer_dir": str(folder / "tokenizer")}


def tiny_pretrain_cfg(corpus, out, **kw):
    """A ``PretrainConfig`` of a few steps of the tiny preset on ``corpus``."""
    from hf_gptlite.pretrain import PretrainConfig

    values = dict(
        output_dir=str(out), train_files=corpus["files"], tokenizer_name_or_path=corpus["tokenizer_dir"],
        model_preset="tiny", block_size=32, per_device_batch_size=8, max_steps=10, logging_steps=2, eval_steps=0,
        save_steps=0, max_train_minutes=None, report_to="none", sample_max_new_tokens=8, clean_text=True,
        **precision_overrides(),
    )
    values.update(kw)
    return PretrainConfig(**values)


def tiny_trainer(corpus, out, hidden_size=64, model_cls=None, **kw):
    """The generic ``Trainer`` on packed blocks of ``corpus`` with the LM metric function."""
    from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM
    from hf_gptlite.pretrain.data import build_lm_data, lm_dataloaders, load_text_documents
    from hf_gptlite.pretrain.metrics import lm_metrics
    from hf_gptlite.training import Trainer, TrainingConfig

    tok = corpus["tokenizer"]
    config = GPTLiteConfig.from_preset("tiny", hidden_size=hidden_size, vocab_size=len(tok), hidden_dropout_prob=0.0)
    torch.manual_seed(0)
    model = (model_cls or GPTLiteForCausalLM)(config)
    train_docs, val_docs = load_text_documents(corpus["files"], clean=True)
    data = build_lm_data(tok, 32, train_docs, val_docs)
    train_loader, eval_loader = lm_dataloaders(data, batch_size=8)
    values = dict(output_dir=str(out), max_steps=12, logging_steps=2, report_to="none", learning_rate=3e-3,
                  **precision_overrides())
    values.update(kw)
    return Trainer(model, train_loader, eval_loader, tok, TrainingConfig(**values),
                   compute_metrics=lm_metrics(data.eval_num_characters))


def wait_for_health(port: int, proc, timeout_s: float, log_path=None) -> None:
    """Poll http://127.0.0.1:PORT/health until a started server answers; RuntimeError (with its log, if any) when
    the process exits or ``timeout_s`` passes first."""
    import time
    import urllib.request

    deadline = time.time() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                log = Path(log_path).read_text() if log_path else ""
                raise RuntimeError(f"the server on port {port} did not start:\n{log}") from None
            time.sleep(0.5)


@pytest.fixture
def restore_pytree_registry():
    """Undo the pytree registrations a test makes: torch.utils._pytree's tables are global to the process (transformers'
    ``register_dynamic_cache_export_support`` for torch.export and its ONNX/OpenVINO exporters each register
    DynamicCache, differently, and keep the first registration they find)."""
    from torch.fx import _pytree as fx_pytree
    from torch.utils import _pytree as pytree

    tables = (pytree.SUPPORTED_NODES, pytree.SUPPORTED_SERIALIZED_TYPES, pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE,
              pytree.CONSTANT_NODES, fx_pytree.SUPPORTED_NODES, fx_pytree.SUPPORTED_NODES_EXACT_MATCH)
    saved = [table.copy() for table in tables]
    yield
    for table, before in zip(tables, saved):
        table.clear()
        table.update(before)


def pytest_collection_modifyitems(session, config, items):
    """tests/export runs last: after it, in the same process, tests/pretrain/test_streaming.py's DataLoader-workers
    test fails at random (workers started with spawn, so the crash is in this process): a segfault in a thread
    without Python frames while the workers start, or batches received from the workers holding heap pointers
    (e.g. 140241221095907) instead of token ids, i.e. the shared memory a received batch lives in was unmapped and
    reused by malloc; native code in this process freed memory it did not own. What is known (issue 23, 2 CPUs,
    torch 2.13, onnxruntime 1.32, openvino 2026.4, llama_cpp_python 0.3.36): importing any one runtime alone, then
    the test: passes; each export test file alone, then the test: passes; test_onnx.py (torch.onnx export, ONNX
    Runtime and OpenVINO sessions), then the test file: 1 of 2 runs segfaulted; test_gguf, test_llamacpp,
    test_int8, test_docs, then the test file: 2 of 2 passed. Narrowed since (bench/diagnostics/export_then_workers.py
    reproduces it outside pytest): test_onnx.py's [openvino] case alone, then the workers test: 2 of 4 runs failed
    (one segfault); its [onnx] case alone: 0 of 4; ONNX and OpenVINO exported, run and released in one process, then
    DataLoader passes: most runs corrupt. A user process that exports to OpenVINO (and ONNX) and then trains with
    DataLoader workers may hit it."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/export/"))
