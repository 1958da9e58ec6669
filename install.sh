#!/usr/bin/env bash
# Set up micromotion in ./.venv from this repository's own files.
#   bash install.sh            runtime + test dependencies (Python packages)
#   bash install.sh --test     also Debian's chromium (browser tests) and iproute2 (loopback-only netns)
#   bash install.sh --weights  also download the default pretrained weights and the paper's official
#                              directions (needs internet)
set -euo pipefail
cd "$(dirname "$0")"
want_test=0; want_weights=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    --weights) want_weights=1 ;;
    *) echo "install.sh: unknown option '$arg' (use --test and/or --weights)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.txt
if [ "$want_test" = 1 ]; then
  missing=""
  command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
  command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
  command -v unshare >/dev/null 2>&1 || missing="$missing util-linux"
  if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
      echo "install.sh: browser tests need:$missing (apt-get install$missing as root); they will be skipped" >&2
    fi
  fi
fi
if [ "$want_weights" = 1 ]; then
  .venv/bin/python -m engine.weights download --default
  .venv/bin/python -m directions install-official
fi
echo "micromotion: environment ready in .venv"
