"""Shared fixtures: tiny projects in a temp folder, built from synthetic logs."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recmoo_dag.config import Params, load_params
from recmoo_dag.synth import synthesize

REPO = Path(__file__).resolve().parents[1]


def deep_update(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def write_params(directory: Path, overrides: dict | None = None) -> Path:
    """params.yaml in `directory`: the defaults, with `overrides` merged in (relative paths)."""
    raw = Params().model_dump(by_alias=True)
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
