import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

torch.set_num_threads(min(2, torch.get_num_threads()))

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
