#!/usr/bin/env bash
# Install everything, then generate the demo data and serve it (opens a browser where there is one).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/tessera demo "$@"
