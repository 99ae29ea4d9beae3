#!/usr/bin/env bash
# The README's GPU row in one call: GPTLite vs transformers' GPT-2 on one GPU, each at its best (bf16, sdpa, fused
# AdamW), in under 5 minutes on one GPU:
#   - training step at the 124M shape (batch 16, context 256): tokens/s, bf16 MFU (against the bf16 torch.mm peak
#     measured on that GPU), paired ratio
#   - cached generation at the 124M shape, batch 1 and 8, 128 new tokens: tokens/s, paired ratio, TTFT, with a
#     dynamic and a static cache
#
#   bash bench/gpu_check.sh              # on a GPU machine, from the repository root (or anywhere: it cd's there)
#   bash bench/gpu_check.sh --compile    # + torch.compile'd training and generate()'s compiled decoding (CUDA
#                                        #   graphs) for both models: 6 compilations, several more minutes
#   bash bench/gpu_check.sh --cpu        # the same script on CPU with a tiny run (a smoke test, ~2 minutes)
#
# Installs the project (pip install -e . --no-deps, then only the missing dependencies) when `import hf_gptlite`
# fails; torch is never reinstalled. Exits non-zero when anything fails. Set PYTHON to pick the interpreter.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
MODE=gpu
COMPILE=""
for arg in "$@"; do
  case "$arg" in
    --cpu|--tiny) MODE=cpu ;;
    --compile) COMPILE="--compile" ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $arg (use --cpu, --compile)" >&2; exit 2 ;;
  esac
done
start=$(date +%s)

if [[ $MODE == gpu ]]; then
  if ! command -v nvidia-smi >/dev/null; then
    echo "gpu_check.sh: nvidia-smi not found: no NVIDIA GPU here (use --cpu for the CPU smoke run)" >&2
    exit 1
  fi
  echo "== GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
fi

if ! "$PY" -c "import hf_gptlite" 2>/dev/null; then
  echo "== installing the project (pip install -e . --no-deps, then the missing dependencies)"
  "$PY" -m pip install -q -e . --no-deps
  missing=$("$PY" - <<'EOF'
import re, tomllib
from importlib.metadata import PackageNotFoundError, version
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
out = []
for dep in deps:
    name = re.split(r"[<>=!~ \[;]", dep, maxsplit=1)[0]
    if name == "torch":  # keep the CUDA build the machine came with
        continue
    try:
        version(name)
    except PackageNotFoundError:
        out.append(dep)
print(" ".join(f"'{d}'" for d in out))
EOF
)
  if [[ -n "$missing" ]]; then
    eval "$PY -m pip install -q $missing"
  fi
  "$PY" -c "import hf_gptlite" || { echo "gpu_check.sh: hf_gptlite still does not import" >&2; exit 1; }
fi

"$PY" - "$MODE" <<'EOF'
import sys, torch, transformers
gpu = sys.argv[1] == "gpu"
print(f"== torch {torch.__version__}, transformers {transformers.__version__}, CUDA available: {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name()}, bf16: {torch.cuda.is_bf16_supported()}" if torch.cuda.is_available() else ""))
if gpu and not torch.cuda.is_available():
    sys.exit("gpu_check.sh: torch sees no CUDA device")
EOF

VARIANTS=gpt2,ours
[[ -n "$COMPILE" ]] && VARIANTS=gpt2,ours,gpt2-compiled,ours-compiled
if [[ $MODE == gpu ]]; then
  TRAIN=(--shapes 124m --variants $VARIANTS --reps 7 --steps 20 --device cuda)
  GEN=(--shape 124m --batches 1,8 --new-tokens 128 --reps 5 --caches dynamic,static --no-cache-tokens "" --device cuda)
else  # a tiny run of the same code paths, to test the script without a GPU
  TRAIN=(--shapes cpu-small --variants gpt2,ours --reps 2 --steps 1 --seq 64 --batch cpu-small=2 --device cpu)
  GEN=(--shape cpu-small --batches 1,2 --new-tokens 8 --reps 2 --caches dynamic,static --no-cache-tokens "" --device cpu)
fi

echo
echo "== training step (bench/train_step.py ${TRAIN[*]})"
"$PY" bench/train_step.py "${TRAIN[@]}" --markdown
echo
echo "== cached generation (bench/generate.py ${GEN[*]} $COMPILE)"
"$PY" bench/generate.py "${GEN[@]}" $COMPILE --markdown
echo
echo "== gpu_check.sh done in $(( $(date +%s) - start )) s"
