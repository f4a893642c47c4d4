#!/usr/bin/env bash
# The prepared GPU check: our GPU code paths on one GPU in well under 10 minutes, without vLLM,
# without network and without any model download. Needs Python with PyTorch (CUDA build),
# transformers, peft and accelerate; sentence-transformers and llamafactory rows run when those are
# importable (or installed from --wheels), else they say "skipped".
#
#   bench/gpu_check.sh                       # --device auto: CUDA when usable, else the CPU
#   bench/gpu_check.sh --device cpu          # the CPU twin (runs on the development machines)
#   bench/gpu_check.sh --device cuda --wheels bench/out/wheels --tokenizer bench/out/tokenizer
#
# It builds a 2-layer random-weight Llama-architecture model from a config and the embedded SmolLM2
# tokenizer (results/models/policy or bench/out/tokenizer, ~3.5 MB; else a byte-level ChatML
# tokenizer made in code), then runs: the CPU/CUDA decision (longmab.device, CUDA not initialised),
# the transformers engine (HFEngine) on the device, the embedder (sentence-transformers) on the
# device, and one LLaMA-Factory DPO step (LoRA) on the device; it prints one table
# (component | device | seconds | result). Exit status 1 when a row failed.
#
# Preparing files for a GPU machine (at most 64 MiB besides the repo):
#   bench/gpu_check.sh --stage-tokenizer     # copies the embedded tokenizer to bench/out/tokenizer
#   bench/gpu_check.sh --stage-wheels        # pip download (no deps) the LLaMA-Factory stack's own
#                                            # wheels into bench/out/wheels and prints their size
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY=python3; fi
fi
OUT="$REPO/bench/out"
WHEELS=""
ARGS=()
# The small pure-Python part of the LLaMA-Factory DPO path and the embedder beyond torch /
# transformers / peft / accelerate, at this venv's versions (3.3 MB of wheels). datasets also needs
# pyarrow (55 MB wheel) and pandas (13 MB): with them the set is 68 MB, over the 64 MiB a device check
# may bring (llamafactory's whole declared closure is ~740 MiB installed), so the DPO row runs where
# pyarrow is already installed or LLaMA-Factory is; it reports "skipped" / the import error otherwise.
LF_DISTS=(llamafactory trl datasets tyro docstring-parser shtab fire termcolor omegaconf dill multiprocess
          xxhash sentence-transformers)

while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS="$2"; shift 2 ;;
    --stage-tokenizer)
      src="$REPO/results/models/policy"
      [ -f "$src/tokenizer.json" ] || { echo "no $src/tokenizer.json: run make run (or build the embedded policy) first" >&2; exit 2; }
      mkdir -p "$OUT/tokenizer"
      for f in tokenizer.json tokenizer_config.json chat_template.jinja special_tokens_map.json; do
        [ -f "$src/$f" ] && cp "$src/$f" "$OUT/tokenizer/"
      done
      du -sh "$OUT/tokenizer"; exit 0 ;;
    --stage-wheels)
      mkdir -p "$OUT/wheels"
      pins=$("$PY" -c 'import sys, importlib.metadata as md; print(" ".join(f"{d}=={md.version(d)}" for d in sys.argv[1:]))' "${LF_DISTS[@]}")
      # shellcheck disable=SC2086
      "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$OUT/wheels" $pins
      du -sh "$OUT/wheels"; ls "$OUT/wheels"; exit 0 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export DISABLE_VERSION_CHECK=1 WANDB_DISABLED=true
export PYTHONPATH="$REPO/workflow_scripts${PYTHONPATH:+:$PYTHONPATH}"
# LLaMA-Factory imports torchaudio at module load; without one, the stand-in of the CPU set-up.
"$PY" -c "import torchaudio" 2>/dev/null || export PYTHONPATH="$PYTHONPATH:$REPO/envs/cpu-shims"
if [ -n "$WHEELS" ]; then
  site="$(mktemp -d /tmp/gpucheck-site.XXXX)"
  # only what the machine lacks: --no-deps, from the carried folder, never from an index
  "$PY" -m pip install -q --no-index --no-deps --target "$site" "$WHEELS"/*.whl
  export PYTHONPATH="$PYTHONPATH:$site"
  export PATH="$site/bin:$PATH"   # llamafactory-cli
fi
"$PY" -c "import torch, transformers; print(f'python {__import__(\"sys\").version.split()[0]}, torch {torch.__version__} (CUDA build {torch.version.cuda}), transformers {transformers.__version__}')"
exec timeout 570 "$PY" -m longmab.gpucheck "${ARGS[@]}"
