"""`recmoo ui`: the Dagster webserver and daemon on 127.0.0.1, with run history kept in the project.

DAGSTER_HOME is <project>/.dagster_home (ignored by git and DVC), so runs, lineage, sensor cursors
and schedule state survive restarts. Its dagster.yaml, written on first start and yours to edit
afterwards, lets one run and one DVC stage execute at a time: DVC locks the workspace per command.
After recording what DVC did, the process becomes `dagster dev`; equivalent shell line, from the
project root:
    DAGSTER_HOME=$PWD/.dagster_home exec dagster dev -h 127.0.0.1 -p 3000
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

from recmoo_dag.defs.definitions import project_dir

INSTANCE_YAML = """\
# Written by `recmoo ui` (recmoo_dag/defs/ui.py) on first start; edit freely, it is not rewritten.
# DVC allows one command at a time per workspace (.dvc/tmp/lock): one run at a time, and one
# stage at a time in the pool every asset uses (runs from the UI, the sensor and the schedule queue).
concurrency:
  runs:
    max_concurrent_runs: 1
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""


def dagster_home(project: Path) -> Path:
    """<project>/.dagster_home with its dagster.yaml (created when missing)."""
    home = project / ".dagster_home"
    home.mkdir(exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(INSTANCE_YAML)
    return home


def ui_command(host: str, port: int) -> list[str]:
    # No -m/-f flag: `dagster dev` reads [tool.dagster] module_name from pyproject.toml in the cwd.
    return [sys.executable, "-m", "dagster", "dev", "--host", host, "--port", str(port)]


def ui_env(project: Path, home: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # `dvc` and `recmoo` for the stages
    return {**os.environ, "DAGSTER_HOME": str(home), "RECMOO_PROJECT_DIR": str(project),
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


def run_ui(host: str = "127.0.0.1", port: int = 3000, project: str | Path | None = None) -> NoReturn:
    """Record DVC's work, then replace this process with `dagster dev` (same pid, process group,
    environment plus DAGSTER_HOME, cwd the project), which serves until SIGINT (Ctrl-C) or SIGTERM
    (kill, systemd, a container stop) and then stops its webserver, daemon and code servers.

    Exec, not a child process: a wrapper killed by SIGTERM left `dagster dev` and its four processes
    holding the port and the instance; one that forwarded signals would still orphan them when
    SIGKILLed, and would have to keep a terminal's Ctrl-C from reaching Dagster twice (a second
    interrupt cuts its shutdown short). Here the signal lands on the process that stops the tree.
    Exit status is dagster dev's own: 0 after a stop by SIGINT or SIGTERM, which it treats as a
    requested shutdown; a signal it does not handle (SIGKILL, SIGHUP) kills it, which a shell
    reports as 128+signal, and leaves its services running, as it would for `dagster dev` by hand.
    """
    project = Path(project).resolve() if project else project_dir()
    home = dagster_home(project)
    print(f"recmoo ui: {sync_now(project, home)}")
    print(f"recmoo ui: http://{host}:{port}  (DAGSTER_HOME={home}; Ctrl-C stops webserver and daemon)")
    sys.stdout.flush()  # exec drops what Python still buffers
    sys.stderr.flush()
    # dagster dev handles SIGTERM with Python's SIGINT handler, which Python installs only when SIGINT
    # is not ignored; an ignored SIGINT survives exec (`recmoo ui &` in a script), so SIGTERM would be
    # ignored as well.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.chdir(project)  # `dagster dev` reads [tool.dagster] module_name from the cwd's pyproject.toml
    os.execve(sys.executable, ui_command(host, port), ui_env(project, home))


def sync_now(project: Path, home: Path) -> str:
    """Record what `dvc repro` did since Dagster last looked, before the first screen (the
    `dvc_sync` sensor keeps it so afterwards)."""
    from dagster import DagsterInstance

    from recmoo_dag.defs.pipeline import load_pipeline
    from recmoo_dag.defs.sync import sync

    with DagsterInstance.from_config(str(home)) as instance:
        return sync(instance, project, load_pipeline(project)).describe()
