#!/usr/bin/env bash
# The lowest supported versions (ci/constraints-min.txt, pyproject.toml's lower bounds) installed together into a
# fresh virtual environment, and the whole test suite run against them. The first job of .ci/run tests the newest
# releases; this one makes the lower bounds tested claims rather than guesses.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)/venv-min"
python3 -m venv "$venv"
"$venv/bin/pip" install -q torch==2.13.0
"$venv/bin/pip" install -q -e ".[dev]" -c ci/constraints-min.txt
"$venv/bin/python" - <<'PY'
# the versions installed must be the constraints' (a resolver that silently picked others would test nothing)
import re
from importlib.metadata import version
for line in open("ci/constraints-min.txt"):
    m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
    if m:
        got = version(m[1]).split("+")[0]
        assert got == m[2], f"{m[1]}: installed {got}, ci/constraints-min.txt says {m[2]}"
        print(f"{m[1]}=={got}", end="  ")
print()
PY
status=0
"$venv/bin/python" -m pytest -q -p no:cacheprovider || status=$?
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no test (lowest versions)" >&2
  exit 1
fi
exit "$status"
