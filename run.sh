#!/usr/bin/env bash
# ./run.sh            set up (if needed), make synthetic data (if none), then the dry run
# ./run.sh test [...]  set up (if needed), then the test suite (extra args go to pytest)
# ./run.sh study ...   set up (if needed), then any study command, e.g. ./run.sh study list
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PY="$VENV/bin/python"
STAMP="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"

setup() {
  if [ -f "$STAMP" ] && "$PY" -c "import torch, torchvision, study" 2>/dev/null; then
    return
  fi
  echo "setting up $VENV (first time: installs torch 2.14.1 + torchvision 0.29.1, a few minutes)" >&2
  [ -x "$PY" ] || python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet -e ".[test]"
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
}

data_present() {
  [ -d data/cifar-10-batches-py ] && [ -d data/oxford-iiit-pet ] && [ -d data/cifar-100-python ] && [ -d data/CUB_200_2011 ]
}

setup
case "${1:-}" in
  test)
    shift
    exec "$PY" -m pytest "$@"
    ;;
  study)
    shift
    exec "$PY" -m study "$@"
    ;;
  "")
    data_present || ./prepare.sh --synthetic --root data
    exec "$PY" -m study --dry-run --run-name dry-run --data-root data --stack "${STUDY_STACK:-workers,pin,script,ddp}"
    ;;
  *)
    echo "usage: ./run.sh [test [pytest args] | study [study args]]" >&2
    exit 2
    ;;
esac
