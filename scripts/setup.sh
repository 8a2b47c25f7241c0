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
.venv/bin/python -m pip install --quiet --disable-pip-version-check "pip==26.3"
# pip byte-compiles on one core (2 min 12 s); compileall with a worker per core: 1 min 58 s.
# Compiled once here, not on import: with PYTHONDONTWRITEBYTECODE set (CI, this image) nothing
# imported is ever cached, and every stage and test process would recompile torch and dagster.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile -c requirements.lock -e '.[dev]'
# Exit 1 only names files that are not Python 3 (templates, py2 examples shipped in some wheels).
.venv/bin/python -m compileall -q -j 0 .venv/lib/python3.11/site-packages >/dev/null || true
# The Dagster UI test drives Debian's chromium (playwright never downloads a browser here).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# The scale-out tests start a real PostgreSQL server (initdb, pg_ctl) for the Dagster instance.
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
   && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
