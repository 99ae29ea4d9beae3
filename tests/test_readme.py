"""The README's "Use it" block runs as written (on a tiny model folder where the main job's would be)."""

import re
import subprocess
import sys
from pathlib import Path

from conftest import SAMPLE_TEXT

from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM
from hf_gptlite.tokenization import align_config_with_tokenizer, train_bpe_tokenizer

README = Path(__file__).resolve().parents[1] / "README.md"


def test_use_it_block_runs_as_written(tmp_path):
    section = README.read_text().split("## Use it", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    folder = tmp_path / "runs" / "pretrain_pt"
    tok = train_bpe_tokenizer([SAMPLE_TEXT], vocab_size=300, show_progress=False)
    GPTLiteForCausalLM(align_config_with_tokenizer(GPTLiteConfig.from_preset("tiny"), tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "A casa ficava no alto da rua, e" in proc.stdout and "Era uma vez" in proc.stdout
    assert "tensor(" in proc.stdout  # the classifier's probabilities
