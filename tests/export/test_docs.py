"""docs/export.md's "From Python" block runs as written (on a tiny model folder where the main job's would be)."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from export_helpers import novels_tokenizer_fixture, tiny_dir_fixture  # noqa: F401

DOC = Path(__file__).resolve().parents[2] / "docs" / "export.md"


@pytest.mark.skipif(
    not (importlib.util.find_spec("gguf") and importlib.util.find_spec("torchao")),
    reason="gguf and torchao are needed (pip install 'hf_gptlite[export]')",
)
def test_from_python_block_runs_as_written(tiny_dir, tmp_path):
    section = DOC.read_text().split("## From Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shutil.copytree(tiny_dir, tmp_path / "runs" / "pretrain_pt")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(DOC.parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["gpt-2", "Int8Tensor"]
    assert (tmp_path / "runs" / "model-q8_0.gguf").stat().st_size > 0
