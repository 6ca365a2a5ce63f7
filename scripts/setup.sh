#!/usr/bin/env bash
# Install everything Tessera and its tests need on a fresh Debian 12 machine:
# system packages (GDAL tools, DICOM validators, PostGIS, Chromium), a Python venv in .venv with
# the package and its test extras, and the built viewer. Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(gdal-bin dcmtk dicom3tools postgresql-15-postgis-3 chromium wrk iproute2)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
# Node may come from elsewhere than Debian (its npm then conflicts with Debian's): only
# install it when the commands are missing.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> installing system packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi
echo "==> installing the Python package and test tools"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

echo "==> building the viewer"
(cd viewer && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)
echo "==> set-up done"
