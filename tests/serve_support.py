"""A real `recmoo serve` process on a loopback port, for the tests that need a socket: started as a
user would, in its own process group (a stop or a kill takes every worker), its output in a log file
that a failure quotes."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def start_service(cwd: Path, port: int, workers: int, pythonpath: str, log: Path) -> subprocess.Popen:
    """`recmoo serve` with the params.yaml of `cwd`; not yet answering."""
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "recmoo_dag.cli", "serve", "--port", str(port),
                                 "--workers", str(workers)], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "PYTHONPATH": pythonpath})


def wait_healthy(process: subprocess.Popen, port: int, log: Path, settle_s: float = 0.0, seconds: float = 90) -> None:
    """Until GET /health answers 200, then `settle_s` more (with several workers: every worker up,
    not only the first to answer)."""
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"http://{HOST}:{port}/health", timeout=1).status_code == 200:
                time.sleep(settle_s)
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, f"recmoo serve exited:\n{log.read_text(errors='replace')[-3000:]}"
        assert time.monotonic() < deadline, f"recmoo serve did not come up:\n{log.read_text(errors='replace')[-3000:]}"
        time.sleep(0.2)


def stop_service(process: subprocess.Popen) -> None:
    """Ctrl-C to the whole group, as from a terminal; killed if it has not stopped in 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def running_service(cwd: Path, workers: int, pythonpath: str, log: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """(the process, its port) while it answers; stopped on the way out."""
    port = free_port()
    process = start_service(cwd, port, workers, pythonpath, log)
    try:
        wait_healthy(process, port, log, settle_s=1.0 if workers > 1 else 0.0)
        yield process, port
    finally:
        stop_service(process)
