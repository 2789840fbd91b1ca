#!/usr/bin/env bash
# Installs everything mlattack, its demo and its tests need, on a new Debian machine or an existing one.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -f /usr/share/wordnet/data.noun ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wordnet-base >/dev/null
fi
PIP="python3 -m pip"
# The CPU wheel first, pinned, so that nothing below pulls a multi-GB CUDA build of torch.
python3 -c "import torch" 2>/dev/null || $PIP install -q "torch==2.13.0"
$PIP install -q -e ".[all]"
