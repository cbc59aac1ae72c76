#!/usr/bin/env bash
# Sets AutoKR up in ./.venv on a new machine: ffmpeg/ffprobe (from apt when missing),
# PyTorch, then AutoKR itself. `./setup.sh --dev` adds the test and lint tools (and Ray, which
# the tests of the Ray backend need, and from apt espeak-ng, chromium, chromium-driver and
# prometheus, which the tests use); `./setup.sh --ray` adds Ray alone, for [cluster] backend
# = "ray" (~260 MB, on the daemon's host and on every node).
# AUTOKR_TORCH picks the PyTorch build, e.g. AUTOKR_TORCH="torch==2.13.0" (the default).
set -euo pipefail
cd "$(dirname "$0")"
wanted=()
for flag in "$@"; do
  case "$flag" in
    --dev) wanted+=(dev ray) ;;
    --ray) wanted+=(ray) ;;
    *) echo "setup.sh: unknown option $flag (known: --dev, --ray)" >&2; exit 2 ;;
  esac
done
extras=""
if [ ${#wanted[@]} -gt 0 ]; then
  extras="[$(printf '%s\n' "${wanted[@]}" | sort -u | paste -sd, -)]"
fi

packages=()
if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
  packages+=(ffmpeg)
fi
# --dev: the tests' English speech comes from espeak-ng (tests/e2e/test_library.py); the status
# page is tested in Chromium and its metrics scraped by Prometheus (tests/e2e/test_status_page.py).
if [[ " ${wanted[*]-} " == *" dev "* ]]; then
  for tool in espeak-ng:espeak-ng chromium:chromium chromedriver:chromium-driver prometheus:prometheus; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || packages+=("${tool#*:}")
  done
fi
if [ ${#packages[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
  else
    echo "setup.sh: please install ${packages[*]} with your package manager first (ffmpeg with ffprobe)" >&2
    exit 1
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check "${AUTOKR_TORCH:-torch==2.13.0}"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}"
echo "AutoKR is installed in $(pwd)/.venv (run .venv/bin/autokr --help)"
