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
# Installs nothing it does not need: the package is pure Python, so the checkout goes on PYTHONPATH; torch is never
# reinstalled. The benchmarks need torch, transformers (>= 5.24), tokenizers, safetensors, accelerate,
# huggingface_hub, pyyaml, tqdm; the check below names any that is missing or too old, and pip installs it where a
# package index is reachable. Where none is (a lent machine without internet), bring them as wheels in .whl/ first,
# on a machine with pip, e.g. for transformers on Python 3.12:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 --platform any -d .whl transformers==5.24.0
# and they are installed into /tmp/gptlite-site (no index). Exits non-zero when anything fails. Set PYTHON to pick
# the interpreter.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
MODE=gpu
COMPILE=""
for arg in "$@"; do
  case "$arg" in
    --cpu|--tiny) MODE=cpu ;;
    --compile) COMPILE="--compile" ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
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

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the package, from this checkout
if compgen -G ".whl/*.whl" >/dev/null; then
  echo "== installing the wheels in .whl/ into /tmp/gptlite-site (no index)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gptlite-site .whl/*.whl
  export PYTHONPATH="/tmp/gptlite-site:$PYTHONPATH"
fi
missing=$("$PY" - <<'EOF'
import tomllib
from importlib.metadata import PackageNotFoundError, version
from packaging.requirements import Requirement
needed = {"transformers", "tokenizers", "safetensors", "accelerate", "huggingface_hub", "pyyaml", "tqdm"}
deps = {Requirement(d).name.lower().replace("-", "_"): Requirement(d)
        for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]}
out = []
for name in sorted(needed):
    req = deps.get(name)
    try:
        ok = req is None or req.specifier.contains(version(name), prereleases=True)
    except PackageNotFoundError:
        ok = False
    if not ok:
        out.append(f"'{req or name}'")
print(" ".join(out))
EOF
)
if [[ -n "$missing" ]]; then
  echo "== missing or too old: $missing; trying pip (needs a package index)"
  eval "$PY -m pip install -q $missing" || {
    echo "gpu_check.sh: could not install $missing: bring them as wheels in .whl/ (see the top of this script)" >&2
    exit 1
  }
fi
"$PY" -c "import hf_gptlite" || { echo "gpu_check.sh: hf_gptlite does not import" >&2; exit 1; }

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
