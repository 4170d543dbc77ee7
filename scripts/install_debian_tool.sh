#!/usr/bin/env bash
# Install a command-line tool from its Debian package when it is missing:
#   bash scripts/install_debian_tool.sh COMMAND PACKAGE
# Used for promtool (package `prometheus`: the alert-rule tests run `promtool check rules`) and
# wrk (package `wrk`: the API load benchmark's load generator).
# Idempotent: does nothing when COMMAND is already on PATH. Needs root (or sudo) the first time;
# refreshes the package lists only when they do not know the package yet.
set -euo pipefail

command_name="$1"
package="$2"

if command -v "$command_name" >/dev/null 2>&1; then
  echo "$command_name present: $(command -v "$command_name")"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install_debian_tool: need root or sudo for $package" >&2; exit 1; }
  SUDO="sudo"
fi

if ! apt-cache show "$package" >/dev/null 2>&1; then
  echo "==> apt-get update (no $package package in the lists yet)"
  $SUDO apt-get update -qq
fi
echo "==> apt-get install $package (for $command_name)"
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$package"
# The prometheus package also starts a prometheus service; the project only needs the linter.
if [ "$package" = prometheus ] && command -v systemctl >/dev/null 2>&1 \
  && systemctl is-active --quiet prometheus 2>/dev/null; then
  $SUDO systemctl stop prometheus || true
fi
command -v "$command_name" >/dev/null
