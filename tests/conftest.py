"""Shared fixtures: tiny projects in a temp folder, built from synthetic logs."""
from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest
import yaml

from recmoo_dag.config import Params, load_params
from recmoo_dag.synth import synthesize

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _signal_dispositions_kept():
    """What a test leaves of SIGINT's and SIGTERM's handlers is undone before the next. A Dagster run in
    the test process restores SIGINT when it ends and sets SIGTERM to the same handler, which is
    SIG_IGN when the suite runs as a background job; an ignored SIGTERM survives exec, so every
    process a later test started would inherit it."""
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    yield
    for number, handler in before.items():
        if handler is not None and signal.getsignal(number) is not handler:
            signal.signal(number, handler)


def deep_update(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def repo_params() -> dict:
    """The project's own params.yaml, the one place every default is written, as a dict."""
    return yaml.safe_load((REPO / "params.yaml").read_text())


def section(path: str, **overrides):
    """One section of the project's params ("features", "data.generic", ...) with `overrides` merged in,
    validated by its schema: FeaturesParams, GenericFormat, ..."""
    params = Params.model_validate(repo_params())
    part = params
    for key in path.split("."):
        part = getattr(part, "validation" if key == "validate" else key)
    return type(part).model_validate(deep_update(part.model_dump(), overrides))


def write_params(directory: Path, overrides: dict | None = None) -> Path:
    """params.yaml in `directory`: the project's, with `overrides` merged in (relative paths)."""
    raw = repo_params()
    deep_update(raw, overrides or {})
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A temp project folder as the working directory; returns a function that writes params."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "raw").mkdir(parents=True)

    def make(overrides: dict | None = None) -> Params:
        return load_params(write_params(tmp_path, overrides))

    return make


@pytest.fixture(scope="session")
def small_log():
    """(interactions, items) of a small synthetic log in the canonical schema."""
    return synthesize(n_users=120, n_items=80, n_events=4000, n_categories=6, seed=7)


def shared_folder(tmp_path_factory, name: str, build) -> Path:
    """A folder built once per test run by `build(folder)` and then only read, shared by every pytest-xdist
    worker of the run (they wait on a file lock while one builds it)."""
    import fcntl
    import os

    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    base = tmp_path_factory.getbasetemp()
    root = base.parent / f"shared-{run}" if run else base / "shared"
    root.mkdir(parents=True, exist_ok=True)
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def repro_project(tmp_path_factory):
    """The tiny synthetic project (tests/defs_support.py) after one `dvc repro` from the command line:
    read-only, shared by the whole run; copy it (shutil.copytree(..., symlinks=True)) to change anything."""
    from tests.defs_support import dvc, make_project

    def build(folder: Path) -> None:
        make_project(folder)
        dvc(folder, "repro")

    return shared_folder(tmp_path_factory, "repro_project", build)


def pytest_collection_modifyitems(items):
    """Order for pytest-xdist, which hands each idle worker its next unit: the xdist_groups first,
    largest first (xdist's own order), then single tests in this order: one test per slow fixture (one
    that needs only it), so that a worker builds each fixture while the other runs tests needing
    neither; then the slow tests (end-to-end, several processes), those needing no fixture before
    those waiting on one; the quick tests last, filling the gaps so that the workers finish together
    instead of one running a long test alone."""
    slow_fixtures = ("repro_project", "materialized_project")
    uses = {id(item): {name for name in slow_fixtures if name in getattr(item, "fixturenames", ())} for item in items}
    builders = {id(next(item for item in items if uses[id(item)] == {name})) for name in slow_fixtures
                if any(uses[id(item)] == {name} for item in items)}

    def turn(item) -> int:
        if id(item) in builders:
            return 0
        slow = item.get_closest_marker("slow") is not None
        if slow:
            return 2 if uses[id(item)] else 1
        return 3 if uses[id(item)] else 4

    items.sort(key=turn)  # stable: within a turn, the collection order
