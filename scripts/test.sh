#!/usr/bin/env bash
# Set up .venv if needed, then run the whole test suite (tests on ../shared/data skip if it is absent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The report.html tests drive headless Chromium. It is installed here rather than in setup.sh
# (which the demo shares): a browser is a large download that only the tests need. Where
# apt-get is missing or we are not root, those tests skip and say why.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
    || echo "note: could not install chromium; the browser tests of report.html will skip" >&2
fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
