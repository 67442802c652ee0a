#!/usr/bin/env bash
# Set up .venv if needed, then run the end-to-end demo on synthetic data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/segpipe demo "$@"
