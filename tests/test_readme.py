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


def test_ci_runs_the_readme_set_up_exactly():
    """.ci/run installs with the README's install line and tests with its test command, then the wheel smoke job
    and the lowest-versions job; pytest's "no test collected" (exit 5) fails it."""
    readme = README.read_text()
    block = re.search(r"## Set-up: two commands.*?```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2, commands
    install, test = commands
    assert install.endswith(" && gptlite-main")
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    assert install.removesuffix(" && gptlite-main") in ci  # the same line, without the 10-minute main job
    assert f"{test} || status=$?" in ci
    assert any('"$status" -eq 5' in line for line in ci)
    assert ci[-2:] == ["bash .ci/wheel_smoke.sh", "bash .ci/min_versions.sh"]
    assert (README.parent / ".ci" / "wheel_smoke.sh").is_file()
    min_job = (README.parent / ".ci" / "min_versions.sh").read_text()
    assert "-c ci/constraints-min.txt" in min_job and '"$status" -eq 5' in min_job
