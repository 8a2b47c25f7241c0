"""Run one DVC stage from Dagster: `dvc repro --single-item <stage>`, one DVC command at a time.

DVC refuses concurrent commands in a workspace in two ways: the repo lock (.dvc/tmp/lock, waited
for with --wait-for-lock) and, while a stage runs, a read/write lock on its deps and outs
(.dvc/tmp/rwlock), which fails at once with "... is busy". So:
- within a run, the in-process executor (definitions.py) runs one step at a time;
- across Dagster runs and processes (UI, sensor, schedule, tests), an exclusive file lock
  (.dvc/tmp/recmoo-dagster.lock) is held around each DVC command; the `dvc_workspace` pool
  (limit 1 in .dagster_home/dagster.yaml) makes the UI show the wait instead of a busy step;
- against a `dvc repro` started by hand, a "busy" refusal is retried every BUSY_RETRY_S seconds
  (DVC refused before running anything, so a retry is safe) for up to BUSY_GIVE_UP_S.
"""
import fcntl
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import AssetExecutionContext, Failure, MetadataValue, OpExecutionContext

LOCK_FILE = ".dvc/tmp/recmoo-dagster.lock"
BUSY = "is busy, it is being blocked by"  # DVC's rwlock message
BUSY_RETRY_S = 10
BUSY_GIVE_UP_S = 3600  # a hand-started training run can take a while; after an hour, fail and say why


def run_dvc_stage(context: AssetExecutionContext, project: Path, name: str) -> None:
    """Run the stage with DVC, streaming its output into the Dagster event log."""
    run_dvc(context, project, ["repro", "--single-item", name])


def run_dvc(context: AssetExecutionContext, project: Path, args: list[str]) -> None:
    """`dvc --wait-for-lock <args>` under the workspace lock, retried while a hand-started DVC
    command holds the workspace; its output streams into the Dagster event log."""
    command = [sys.executable, "-m", "dvc", "--wait-for-lock", *args]
    shown = " ".join(args)
    deadline = time.monotonic() + BUSY_GIVE_UP_S
    with workspace_lock(project, on_wait=lambda: context.log.info(
            "waiting for another Dagster step's DVC command in this workspace")):
        while True:
            context.log.info(f"$ dvc --wait-for-lock {shown}  (in {project})")
            code, output = stream(context, command, project)
            if code == 0:
                return
            if BUSY in output and time.monotonic() < deadline:
                context.log.warning(f"another dvc command holds the workspace; retrying in {BUSY_RETRY_S}s")
                time.sleep(BUSY_RETRY_S)
                continue
            raise Failure(description=f"dvc {shown} failed (exit {code}):\n{output}",
                          metadata={"dvc output": MetadataValue.md(f"```\n{output}\n```")})


@contextmanager
def workspace_lock(project: Path, wait: bool = True, on_wait: Callable[[], None] = lambda: None) -> Iterator[bool]:
    """Exclusive lock on the workspace around one DVC command or one read of its state (released if
    the process dies). Yields whether it is held: with wait=False, False at once when another holds
    it; otherwise `on_wait()` is called and the lock waited for."""
    path = project / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def stream(context: AssetExecutionContext | OpExecutionContext, command: list[str], project: Path) -> tuple[int, str]:
    """Run `command` in `project`, its output lines into the Dagster event log: -> (exit code, its last lines)."""
    tail: deque[str] = deque(maxlen=40)  # what a failure message shows
    with subprocess.Popen(command, cwd=project, env=dvc_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            if line.strip():
                tail.append(line.rstrip())
                context.log.info(line.rstrip())
    return proc.returncode, "\n".join(tail)


def dvc_env() -> dict[str, str]:
    """dvc.yaml runs `recmoo <stage>`: this interpreter's bin folder must be on PATH, as in the Makefile."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
