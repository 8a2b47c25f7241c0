"""Real servers for the scale-out tests, on loopback, stopped by the tests: an S3-API server (moto in
server mode) for DVC remotes, and a PostgreSQL server in a temporary folder for the Dagster instance."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

from tests.serve_support import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "recmoo-test", "AWS_SECRET_ACCESS_KEY": "recmoo-test-secret"}


@contextmanager
def s3_server() -> Iterator[SimpleNamespace]:
    """moto's S3 API server on 127.0.0.1 with one new bucket (s3fs needs a real server, not moto's mocks).
    Every server of one process shares moto's in-memory backend, buckets included, and `dvc push`
    skips objects a remote already holds: a bucket of its own per server keeps one test's objects
    (an altered one, say) out of the next test's remote."""
    import uuid

    import boto3
    from moto.server import ThreadedMotoServer

    bucket = f"recmoo-{uuid.uuid4().hex[:12]}"
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                              aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
        client.create_bucket(Bucket=bucket)
        yield SimpleNamespace(url=url, bucket=bucket, client=client)
    finally:
        server.stop()


def add_remote(dvc, project: Path, s3: SimpleNamespace, name: str = "shared") -> None:
    """The remote as a team would configure it (README "Running on a cluster"): URL and `verify true`
    in .dvc/config (committed), endpoint and credentials in .dvc/config.local (never committed)."""
    dvc(project, "remote", "add", "--force", "-d", name, f"s3://{s3.bucket}/cache")
    dvc(project, "remote", "modify", name, "verify", "true")
    dvc(project, "remote", "modify", "--local", name, "endpointurl", s3.url)
    dvc(project, "remote", "modify", "--local", name, "access_key_id", CREDENTIALS["AWS_ACCESS_KEY_ID"])
    dvc(project, "remote", "modify", "--local", name, "secret_access_key", CREDENTIALS["AWS_SECRET_ACCESS_KEY"])


def _pg_binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    if not found:
        raise RuntimeError(f"{name} not found: install PostgreSQL (scripts/setup.sh does, apt package postgresql)")
    return found


@contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server in a temporary folder, on 127.0.0.1 only; yields the URL of an empty
    database and removes everything after. PostgreSQL refuses to run as root: as root, the server
    runs as the `postgres` system user, in a folder it can reach (pytest's are root-only)."""
    folder, port = Path(tempfile.mkdtemp(prefix="recmoo-pg-")), free_port()
    data = folder / "pgdata"
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres")
    run = lambda *args: subprocess.run([*as_user, *args], check=True, capture_output=True, text=True)
    run(_pg_binary("initdb"), "-D", str(data), "-U", "recmoo", "--auth=trust", "--no-sync")
    run(_pg_binary("pg_ctl"), "-D", str(data), "-l", str(folder / "postgres.log"), "-w", "-o",
        f"-p {port} -h 127.0.0.1 -k {folder}", "start")
    try:
        run("psql", "-h", "127.0.0.1", "-p", str(port), "-U", "recmoo", "-d", "postgres", "-c",
            "CREATE DATABASE dagster")
        yield f"postgresql+psycopg2://recmoo@127.0.0.1:{port}/dagster"  # SQLAlchemy 2.1 would pick psycopg 3
    finally:
        run(_pg_binary("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


POSTGRES_INSTANCE = """\
# A Dagster instance whose runs, event log (lineage) and schedules/sensors live in PostgreSQL.
storage:
  postgres:
    postgres_url:
      env: RECMOO_DAGSTER_PG_URL
concurrency:
  runs:
    max_concurrent_runs: 1
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""
