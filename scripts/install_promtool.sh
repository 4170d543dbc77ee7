#!/usr/bin/env bash
# Install promtool (Prometheus' rule linter) from Debian's `prometheus` package when it is missing.
# Idempotent: does nothing when promtool is already on PATH. The alert rules test
# (tests/unit/test_monitoring_assets.py) runs `promtool check rules` and fails without it.
# Needs root (or sudo) the first time; refreshes the package lists only when they are empty or
# the package cannot be found.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
  echo "promtool present: $(promtool --version 2>&1 | head -n1)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install_promtool: need root or sudo" >&2; exit 1; }
  SUDO="sudo"
fi

if ! apt-cache show prometheus >/dev/null 2>&1; then
  echo "==> apt-get update (no prometheus package in the lists yet)"
  $SUDO apt-get update -qq
fi
echo "==> apt-get install prometheus (for promtool)"
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus
# The package also ships a prometheus service; the project only needs the linter.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  $SUDO systemctl stop prometheus || true
fi
promtool --version 2>&1 | head -n1
