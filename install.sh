#!/usr/bin/env bash
# Set up micromotion in ./.venv from this repository's own files.
#   bash install.sh            runtime + test dependencies (Python packages)
#   bash install.sh --test     also Debian's chromium (browser tests) and iproute2 (loopback-only netns)
#   bash install.sh --weights  also fetch everything the effect needs: `python -m directions setup` (the default
#                              networks and the paper's official directions; needs internet). A download that fails
#                              is reported and leaves a working install (exit 0): the front ends then start in
#                              face-tracking-only mode and show the command to run once online.
# Idempotent: packages are reinstalled only when requirements*.txt changed since the last successful install
# (stamp in the venv); weights already downloaded are skipped. MICROMOTION_VENV overrides the venv folder.
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
VENV=${MICROMOTION_VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"

stamp="$VENV/.micromotion-requirements"
want_stamp=$("$VENV/bin/python" -c 'import hashlib, sys
h = hashlib.sha256(sys.version.encode())
for f in ("requirements.txt", "requirements-nodeps.txt"):
    h.update(open(f, "rb").read())
print(h.hexdigest())')
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_stamp" ]; then
  echo "micromotion: Python packages up to date (requirements unchanged; delete $stamp to reinstall)"
else
  "$VENV/bin/python" -m pip install -q -r requirements.txt
  "$VENV/bin/python" -m pip install -q --no-deps -r requirements-nodeps.txt
  echo "$want_stamp" > "$stamp"
fi

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

weights_note=""
if [ "$want_weights" = 1 ]; then
  # One command fetches the networks and the directions; it says what failed and why. A failed download must
  # not fail the install: the packages are in place and every front end starts without weights.
  if ! "$VENV/bin/python" -m directions setup; then
    echo "install.sh: the weights could not all be downloaded (see the lines above for what failed and why)." >&2
    echo "install.sh: the install itself is complete: the page starts in face-tracking-only mode and shows what" >&2
    echo "install.sh: to run. Once the cause is fixed, fetch the rest with: $VENV/bin/python -m directions setup" >&2
    weights_note=" (weights incomplete: run $VENV/bin/python -m directions setup)"
  fi
fi
echo "micromotion: environment ready in $VENV$weights_note"
