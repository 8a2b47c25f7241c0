"""recmoo_dag: raw interaction logs to a deployed multi-objective recommendation policy."""

__version__ = "0.1.0"
