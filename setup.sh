#!/usr/bin/env bash
# Installs everything mlattack, its demo and its tests need, on a new Debian machine or an existing one.
# Idempotent and quick when done: a second run only checks.
#   Debian: wordnet-base (WordNet 3.0), opencv-doc (sample photos the demo attacks), and under CI=true
#           chromium (the rendering tests of the report and of the documentation site; skipped
#           where chromium is absent).
#   Python (the python3 on PATH; use a virtualenv): torch (the CPU wheel, only when no torch is
#           installed, so an existing CUDA build is kept), then this package with all its extras
#           (the `docs` extra brings mkdocs, which .ci/run uses).
set -euo pipefail
cd "$(dirname "$0")"

missing=()
[ -f /usr/share/wordnet/data.noun ] || missing+=(wordnet-base)
[ -d /usr/share/doc/opencv-doc/examples/data ] || missing+=(opencv-doc)
if [ "${CI:-}" = true ] && ! command -v chromium >/dev/null 2>&1; then missing+=(chromium); fi
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# pip's own resolution takes many seconds even when nothing changes: skip it while this checkout,
# with this pyproject.toml, is already installed into this Python.
stamp_dir="${XDG_CACHE_HOME:-$HOME/.cache}/mlattack"
key=$( (command -v python3; pwd; cat pyproject.toml) | sha256sum | cut -c1-16)
here="$(pwd)/src/"
if [ -f "$stamp_dir/setup-$key" ] && python3 -c "import mlattack, sys
sys.exit(not mlattack.__file__.startswith('$here'))" 2>/dev/null; then
  exit 0
fi
PIP="python3 -m pip"
# The CPU wheel first, pinned, so that nothing below pulls a multi-GB CUDA build of torch.
python3 -c "import torch" 2>/dev/null || $PIP install -q "torch==2.13.0"
$PIP install -q -e ".[all]"
mkdir -p "$stamp_dir" && touch "$stamp_dir/setup-$key"
