#!/usr/bin/env bash
# Create or reuse the project's virtual environment at .venv/ and install everything:
# the package (editable) with its development extras, under the machine pins of
# constraints.txt, and - where apt-get exists and we are root - Debian's Fashion-MNIST files.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, torchvision, lightning, distpro_lightning" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ] || [ constraints.txt -nt .venv/.installed ]; then
  echo "[setup] installing distpro-lightning[dev] (torch pinned by constraints.txt)"
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
  touch .venv/.installed
fi
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Debian's dataset-fashion-mnist"
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
      || echo "[setup] apt-get failed: Fashion-MNIST will be looked for under data/ (download=True fetches it)"
  else
    echo "[setup] no apt-get/root: Fashion-MNIST is read from data/FashionMNIST/raw or downloaded by torchvision"
  fi
fi
echo "[setup] ready: .venv/bin/python, .venv/bin/distpro"
