#!/usr/bin/env bash
# Create .venv and install the project with the exact versions of requirements.lock.
# torch is pinned to 2.13.0 there: on this CPU machine pip takes the local CPU wheel. For CUDA,
# install the CUDA build of the same version first, e.g.
#   .venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128
# and then run this script: the pin is satisfied and pip keeps that build.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), "recmoo_dag needs Python 3.11"'
[ -x .venv/bin/python ] || "$python" -m venv .venv
# pip takes torch (its pin from the lock: on this image a local CPU wheel that uv does not look for),
# uv the other ~270 packages: it downloads and unpacks in parallel (this script: 24 s on a fresh clone
# here, 118 s with pip and a compileall of the venv).
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile \
  "$(grep -E '^uv==' requirements.lock)" "$(grep -E '^torch==' requirements.lock)"
.venv/bin/uv pip install --quiet --python .venv/bin/python -c requirements.lock -e '.[dev]'
# No byte-compiling here (compileall of the whole venv compiles mostly modules nothing imports): the
# Makefile points PYTHONPYCACHEPREFIX into .venv, so each module is compiled once, on its first import,
# even where PYTHONDONTWRITEBYTECODE is set (CI, this image).
# The Dagster UI test drives Debian's chromium (playwright never downloads a browser here).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# The scale-out tests start a real PostgreSQL server (initdb, pg_ctl) for the Dagster instance.
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
   && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
