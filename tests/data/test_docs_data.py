"""docs/data.md's Python block runs as written (on a tiny corpus and tokenizer where the user's would be)."""

import re
import shutil
import subprocess
import sys

from conftest import REPO, recipe_env

DOC = REPO / "docs" / "data.md"


def test_the_python_block_runs_as_written(corpus, tmp_path):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    (tmp_path / "corpus").mkdir()
    for path in corpus["files"]:
        shutil.copy(path, tmp_path / "corpus")
    shutil.copytree(corpus["tokenizer_dir"], tmp_path / "my_tokenizer")
    for run in range(2):  # the second run maps the cache the first one built
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=recipe_env(), capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert re.search(r"\d+ training blocks; \d+ validation characters", proc.stdout)
        assert ("token cache: reusing" in proc.stdout) == (run == 1)
    assert len(list((tmp_path / "token_cache").iterdir())) == 1
