"""Dagster on top of the DVC pipeline: one asset per dvc.yaml stage, blocking checks, a sensor on
the incoming folder and a retraining schedule. `dagster dev` finds `defs` through pyproject's
[tool.dagster] module_name; `recmoo ui` starts it with a persistent DAGSTER_HOME (see ui.py)."""
from recmoo_dag.defs.definitions import build_defs

defs = build_defs()

__all__ = ["build_defs", "defs"]
