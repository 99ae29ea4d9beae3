"""docs/training_loop.md's code block runs as written (a tiny model resumed with a new learning rate and length)."""

import re
import subprocess
import sys

from conftest import REPO, recipe_env

PAGE = REPO / "docs" / "training_loop.md"


def test_the_resume_example_runs_as_written(tmp_path):
    code = re.search(r"```python\n(.*?)```", PAGE.read_text(), re.S).group(1)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=recipe_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed to step 12" in proc.stdout
