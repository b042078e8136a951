#!/usr/bin/env bash
# Datasets: synthetic stand-ins, real archives (extract + verify + clean), S3 upload.
# Thin wrapper around `python -m study.data.prepare`; see ./prepare.sh --help.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -x "$here/.venv/bin/python" ]; then
    py="$here/.venv/bin/python"
else
    py="$(command -v python3 || true)"
    [ -n "$py" ] || { echo "prepare.sh: no python3 found (and no $here/.venv)" >&2; exit 2; }
fi
# Paths given by the user stay relative to where they ran the script; the package comes from here.
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" -m study.data.prepare "$@"
