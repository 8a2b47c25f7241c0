"""Sensor on the incoming folder (params data.incoming_dir): one run per new batch of log files.

A file counts when ingest would read it (same name rules: no hidden or `.tmp`/`.part` names, the
pattern of data.format) and its size has not changed across two ticks (a producer copying a big
file without a temp name is still writing). The run_key is the hash of the batch's contents, and
the cursor remembers every content hash already sent, so the same file twice (even renamed)
starts one run. The run is everything downstream of the stages that read the folder (ingest ...).
"""

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from recmoo_dag.config import load_params
from recmoo_dag.data import find_log_files
from recmoo_dag.io import sha256_file

if TYPE_CHECKING:  # what define_asset_job returns; not exported by dagster's top level
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition


@dataclass
class Cursor:
    seen: dict[str, str] = field(default_factory=dict)  # content sha256 -> the file that brought it
    pending: dict[str, int] = field(default_factory=dict)  # file -> size at the last tick, not yet settled
    hashed: dict[str, list] = field(default_factory=dict)  # file -> [size, mtime_ns, sha256]: no re-reads

    @classmethod
    def load(cls, text: str | None) -> "Cursor":
        return cls(**json.loads(text)) if text else cls()

    def dump(self) -> str:
        return json.dumps({"seen": self.seen, "pending": self.pending, "hashed": self.hashed}, sort_keys=True)


@dataclass
class Tick:
    batch: dict[str, str]  # file -> sha256: settled files with contents never seen before
    waiting: list[str]  # new or growing files
    known: list[str]  # settled files whose contents were already sent
    ignored: list[str]  # files ingest would not read (temp names, other formats)
    cursor: Cursor


def scan(project: Path, cursor: Cursor) -> Tick:
    """One tick of the sensor as plain data (what `incoming_logs` does minus Dagster)."""
    params = load_params(project / "params.yaml")
    incoming = project / params.data.incoming_dir
    interactions, items = find_log_files(incoming, params.data.format, params.data.generic)
    logs = sorted(set(interactions) | set(items))
    readable = set(logs)
    present = incoming.rglob("*") if incoming.is_dir() else []
    others = sorted(p for p in present if p.is_file() and p not in readable)
    nxt = Cursor(seen=dict(cursor.seen))
    batch, waiting, known = {}, [], []
    for path in logs:
        name, stat = path.relative_to(project).as_posix(), path.stat()
        cached = cursor.hashed.get(name)
        if cached and cached[:2] == [stat.st_size, stat.st_mtime_ns]:
            sha = cached[2]
        elif cursor.pending.get(name) == stat.st_size:  # same size two ticks in a row: written
            sha = sha256_file(path)
        else:
            nxt.pending[name] = stat.st_size
            waiting.append(name)
            continue
        nxt.hashed[name] = [stat.st_size, stat.st_mtime_ns, sha]
        if sha in nxt.seen:
            known.append(name)
        else:
            batch[name] = sha
            nxt.seen[sha] = name
    return Tick(batch, waiting, known, [p.relative_to(project).as_posix() for p in others], nxt)


def batch_key(batch: dict[str, str]) -> str:
    """Same contents, same key: sorted content hashes, not names or times."""
    return "incoming-" + hashlib.sha256("".join(sorted(batch.values())).encode()).hexdigest()[:20]


def skip_message(tick: Tick, incoming: str) -> str:
    parts = []
    if tick.waiting:
        parts.append(f"waiting for {len(tick.waiting)} file(s) to keep their size for one more tick: "
                     + ", ".join(tick.waiting))
    if tick.known:
        parts.append(f"{len(tick.known)} file(s) already sent to a run (same contents)")
    if tick.ignored:
        parts.append(f"ignored {len(tick.ignored)} file(s) ingest would not read (hidden, .tmp/.part, "
                     f"or not matching data.format): " + ", ".join(tick.ignored[:5]))
    return "; ".join(parts) or f"no log files in {incoming}"


def build_incoming_sensor(project: Path, job: "UnresolvedAssetJobDefinition", interval: int,
                          enabled: bool) -> SensorDefinition:
    incoming = load_params(project / "params.yaml").data.incoming_dir

    @sensor(name="incoming_logs", job=job, minimum_interval_seconds=interval,
            default_status=DefaultSensorStatus.RUNNING if enabled else DefaultSensorStatus.STOPPED,
            description=f"One run of `{job.name}` per new batch of log files in `{incoming}` "
                        f"(params data.incoming_dir); run_key = hash of the batch's contents.")
    def incoming_logs(context: SensorEvaluationContext) -> SensorResult:
        tick = scan(project, Cursor.load(context.cursor))
        if not tick.batch:
            return SensorResult(skip_reason=SkipReason(skip_message(tick, incoming)),
                                cursor=tick.cursor.dump())
        files = sorted(tick.batch)
        context.log.info(f"new batch of {len(files)} file(s): {', '.join(files)}")
        request = RunRequest(run_key=batch_key(tick.batch),
                             tags={"recmoo/incoming_files": ",".join(Path(f).name for f in files)[:200],
                                   "recmoo/trigger": "incoming_logs"})
        return SensorResult(run_requests=[request], cursor=tick.cursor.dump())

    return incoming_logs


def build_sync_sensor(project: Path, stages: dict, interval: int, enabled: bool) -> SensorDefinition:
    """`dvc_sync`: every tick, record what DVC did outside Dagster and why DVC would re-run a stage
    (recmoo_dag/defs/sync.py); it requests no run."""
    from recmoo_dag.defs.sync import sync

    @sensor(name="dvc_sync", minimum_interval_seconds=interval,
            default_status=DefaultSensorStatus.RUNNING if enabled else DefaultSensorStatus.STOPPED,
            description="Records `dvc repro` runs made outside Dagster (runless materializations from dvc.lock), "
                        "DVC's reasons to re-run a stage, and rollbacks of the served version.")
    def dvc_sync(context: SensorEvaluationContext) -> SkipReason:
        return SkipReason(sync(context.instance, project, stages).describe())

    return dvc_sync
