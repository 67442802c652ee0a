#!/usr/bin/env bash
# Creates .venv (once), installs the CPU build of torch 2.13.0 first, then segpipe with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.segpipe-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # An unpinned torch would pull several GB of CUDA wheels: pin the CPU build before anything needs torch.
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  echo "torch==2.13.0" > .venv/constraints.txt
  .venv/bin/python -m pip install --quiet -c .venv/constraints.txt -e ".[test]"
  echo "$want" > "$stamp"
fi
