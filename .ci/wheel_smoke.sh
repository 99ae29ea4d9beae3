#!/usr/bin/env bash
# The package as a user gets it from `pip install .`: build the wheel, install it into a FRESH virtual environment
# (no system site-packages: the system python3 has the editable install of this checkout, which would hide a file
# missing from the wheel), then run a smoke job from a temporary folder, without PYTHONPATH, that reads every kind
# of package data: the embedded novels (tokenizer, pretraining), the shipped SMS collection and the
# binary-classification metric module (spam), the instruction set and the ROUGE-L module (instruct), the model-card
# templates (push --dry_run). Every command must exit 0. Usage: .ci/wheel_smoke.sh (from anywhere; a clean clone
# works: the wheel is built from the committed sources).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
# The venv (1.2 GB, 25k files) goes to RAM (/dev/shm) when it has room and allows programs: on this machine's
# throttled disk, writing it and deleting it took minutes; in tmpfs, seconds. Elsewhere: $TMPDIR.
base="${TMPDIR:-/tmp}"
if [ -d /dev/shm ] && ! grep -qE '^[^ ]+ /dev/shm [^ ]+ [^ ]*noexec' /proc/mounts 2>/dev/null \
   && [ "$(df -Pk /dev/shm | awk 'NR == 2 {print $4}')" -gt 4000000 ]; then
  base=/dev/shm
fi
WORK="$(mktemp -d "$base/gptlite-wheel-smoke.XXXXXX")"
start=$SECONDS
step() { echo "[wheel smoke $((SECONDS - start))s] $*"; }
trap 'step "cleaning up"; rm -rf "$WORK"; step "done"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1
unset PYTHONPATH

step "build the wheel"
# `pip wheel` builds in an isolated environment (setuptools + wheel from the index) like `pip install .` does;
# python -m build is not installed here. The copy leaves the checkout's build/ and *.egg-info alone.
mkdir "$WORK/src"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$WORK/src" 2>/dev/null) \
  || cp -r "$REPO"/. "$WORK/src"
python3 -m pip wheel -q --no-deps "$WORK/src" -w "$WORK/dist"
WHEEL="$(ls "$WORK"/dist/hf_gptlite-*.whl)"
python3 - "$WHEEL" <<'EOF'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
need = ["hf_gptlite/hub/cards/causal_lm.md", "hf_gptlite/hub/cards/spam_classifier.md",
        "hf_gptlite/hub/cards/instruction_model.md", "hf_gptlite/resources/metrics/rouge_l/rouge_l.py",
        "hf_gptlite/resources/metrics/binary_classification/binary_classification.py",
        "hf_gptlite/resources/instructions/instruction-data.json", "hf_gptlite/resources/sms_spam/SMSSpamCollection.tsv",
        "hf_gptlite/resources/books_pt/machado_de_assis-dom_casmurro.txt"]
missing = [n for n in need if n not in names]
stray = sorted(n for n in names if "__pycache__" in n or n.endswith(".pyc"))
assert not missing, f"the wheel lacks {missing}"
assert not stray, f"the wheel carries compiled files {stray[:5]}"
print(f"wheel: {len(names)} files, package data present")
EOF

step "fresh venv: torch (local CPU wheel), then the wheel with its dependencies"
python3 -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
# --no-compile: no byte-compiling of every installed module up front (Python compiles what it imports)
"$PY" -m pip install -q --no-compile torch==2.13.0
"$PY" -m pip install -q --no-compile "$WHEEL"

cd "$WORK"
mkdir run && cd run
"$PY" - <<'EOF'
import hf_gptlite, sys
assert "/venv/" in hf_gptlite.__file__, f"hf_gptlite imported from {hf_gptlite.__file__}, not the venv"
print("hf_gptlite from", hf_gptlite.__file__)
EOF
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_HOME="$WORK/hf_home"
TINY=(--model_preset tiny --max_position_embeddings 512 --block_size 32 --per_device_batch_size 8 --max_steps 3
      --max_train_minutes 0 --eval_steps 0 --save_steps 0 --logging_steps 1 --report_to none --mixed_precision no
      --sample_max_new_tokens 8)

step "train_tokenizer on the embedded novels"
"$PY" -m hf_gptlite train_tokenizer --output_dir tok --vocab_size 300
step "pretrain (tiny preset, 3 steps) on the embedded novels"
"$PY" -m hf_gptlite pretrain --output_dir lm --tokenizer_name_or_path tok "${TINY[@]}"
step "load it with AutoModelForCausalLM after import hf_gptlite"
"$PY" -c "
import hf_gptlite
from transformers import AutoModelForCausalLM, AutoTokenizer
model, tok = AutoModelForCausalLM.from_pretrained('lm'), AutoTokenizer.from_pretrained('lm')
assert type(model).__name__ == 'GPTLiteForCausalLM', type(model)
print('loaded', type(model).__name__, model.num_parameters(), 'parameters')
"
step "finetune_spam (shipped SMS collection, shipped metric module)"
"$PY" -m hf_gptlite finetune_spam --model_name_or_path lm --output_dir spam --max_steps 2 --warmup_steps 0 \
  --logging_steps 1
step "gptlite-classify"
"$WORK/venv/bin/gptlite-classify" --model spam "WINNER!! Claim your prize now" "See you at 6?"
step "finetune_instruct + evaluate_instruct + chat (shipped instructions, shipped ROUGE-L module)"
"$PY" -m hf_gptlite finetune_instruct --model_name_or_path lm --output_dir instruct --max_steps 2 --eval_steps 0 \
  --warmup_steps 0 --logging_steps 1 --report_to none --mixed_precision no
"$PY" -m hf_gptlite evaluate_instruct --model_name_or_path instruct --max_records 2 --max_new_tokens 4
"$PY" -m hf_gptlite chat --model_name_or_path instruct --message "Name a color." --max_new_tokens 4
step "push_to_hub --dry_run (card templates)"
"$PY" -m hf_gptlite push_to_hub --model_dir lm --repo_id smoke/gptlite-tiny --dry_run upload
test -s upload/README.md && grep -q "gptlite" upload/README.md
step "a user mistake: exit status 2 and one error line"
set +e
"$PY" -m hf_gptlite push_to_hub --model_dir /nonexistent --repo_id smoke/x --dry_run never 2> err.txt
status=$?
set -e
[ "$status" = 2 ] && [ "$(wc -l < err.txt)" = 1 ] && grep -q "^error: " err.txt && [ ! -e never ] \
  || { echo "expected exit 2 and one error line, got $status:"; cat err.txt; exit 1; }
step "passed"
