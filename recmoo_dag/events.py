"""The events the service takes (POST /events): checked, made durable, rolled into batch files the
pipeline reads, and remembered per user for the next request's session.

An event is the part of a canonical interaction (recmoo_dag/data.py) a client reports: user_id,
item_id, timestamp (seconds UTC; the server stamps a missing one on arrival) and an optional event
type; the rating stays empty (implicit feedback).

1. Checked whole before anything is written (`check`): every row by the rules validation applies to
   one event (validation.event_failures: ids not blank, time in range), and by the encoding its batch
   file is written in. A row breaking a rule refuses the batch: the answer names each row and rule,
   and nothing is written. Unknown items are kept (a new item is news, not an error) and counted.
2. On disk before the answer (`EventLog.append`): the rows are appended, one line a request, to
   the worker's segment `serve.events_log_dir/events-<UTC start>-p<pid>.jsonl`, and fsynced. The
   requests waiting meanwhile share the next write and fsync (group commit). A line is all of a
   request or, torn by a kill, none of it: a request is acknowledged whole. The log lies outside
   data.raw_dir: DVC and lineage hash that folder, and a file growing there would make `ingest` stale.
3. Rolled: a segment holding serve.events_roll_count events, or whose first event is
   serve.events_roll_seconds old, becomes a batch file under data.incoming_dir in data.format
   (recmoo_dag/event_files.py: written as `.part`, fsynced, renamed), and is then removed. The batch
   is named after the segment: names sort in time (ingest reads files in name order), and a kill
   between the rename and the removal leaves a segment whose batch exists: it is removed, not rolled twice.
4. Several workers (serve.workers): each appends only to its own segment, named by its pid, and
   holds an exclusive flock on it while it lives. A worker starting up rolls every segment it can
   lock: their writers are gone (killed or crashed; the kernel dropped their locks). A torn last line,
   an append the kill cut short and so never acknowledged, is dropped with a warning.

The promise: an acknowledged event survives a kill of the service at any instant (kill -9), and a
power cut on a file system that honours fsync; it reaches data.incoming_dir at the next roll, the
worker's shutdown, or the next start. Not promised: the loss of the disk (one machine, no replica),
nor exactly-once: a client that got no answer cannot tell whether its batch was recorded, and a retry
may record it twice (with client timestamps the copies are exact repeats: ingest drops the one in a
later batch file as a re-delivery; in one file, validation's repeat-share rule judges them).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sys
import threading
import time
import warnings
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from recmoo_dag.config import DataParams, Params, ValidateParams
from recmoo_dag.data import find_log_files, read_interactions
from recmoo_dag.errors import EventLogError, reason
from recmoo_dag.event_files import BatchFormat, Event, batch_format
from recmoo_dag.io import fsync_dir
from recmoo_dag.validation import event_failures

BATCH_NAME = re.compile(r"events-\d{8}-\d{6}-\d{6}-p\d+")  # a segment's name, and its batch file's
RAW_LOGS = "raw logs"  # the lineage link listing the log files a version was built from (deploy.lineage_chain)


@dataclass(frozen=True)
class Problem:
    row: int  # index in the request's list
    column: str
    rule: str


def check(rows: Sequence[tuple[str, str, int | None, str | None]], rules: ValidateParams, batch: BatchFormat,
          now: int) -> tuple[list[Event], list[Problem]]:
    """(user_id, item_id, timestamp or None, event or None) rows -> the events, stamped with `now` where
    the time is missing, and every rule a row breaks (none: the batch may be written)."""
    events, problems = [], []
    for row, (user, item, timestamp, kind) in enumerate(rows):
        event = Event(user.strip(), item.strip(), now if timestamp is None else timestamp, kind)
        failures = event_failures(event.user_id, event.item_id, event.timestamp, rules) + batch.unwritable(event)
        problems += [Problem(row, column, rule) for column, rule in failures]
        events.append(event)
    return events, problems


# ------------------------------------------------------------------------------------- the durable log

@dataclass
class _Waiting:
    """One append in the group-commit queue."""

    lines: bytes
    count: int
    done: bool = False
    batch: str = ""
    error: BaseException | None = None


class EventLog:
    """One worker's durable log: group-committed appends, rolls by count or age (module docstring)."""

    def __init__(self, folder: Path, incoming: Path, batch: BatchFormat, roll_count: int, roll_seconds: float):
        self.folder, self.incoming, self.batch = Path(folder), Path(incoming), batch
        self.roll_count, self.roll_seconds = roll_count, roll_seconds
        self._cond = threading.Condition()
        self._queue: list[_Waiting] = []
        self._busy = False  # a thread is writing, rolling or closing the segment (under _cond)
        self._fd: int | None = None  # the open segment, opened at the first append after a roll
        self._path, self._name, self._size, self._count, self._first = Path(), "", 0, 0, 0.0
        self._last_micros = 0
        self._closed = threading.Event()
        self._ager: threading.Thread | None = None

    def append(self, events: Sequence[Event]) -> str:
        """Append `events` and fsync; returns the name of the batch they will roll into, once they are
        on disk. Blocks (call it off the event loop). EventLogError: not written, nothing acknowledged."""
        entry = _Waiting(_line(events), len(events))
        with self._cond:
            self._queue.append(entry)
            while not entry.done:
                if self._busy:  # another append's write is under way: ours joins the next one
                    self._cond.wait()
                    continue
                group, self._queue, self._busy = self._queue, [], True
                self._cond.release()
                try:
                    batch, error = self._commit(group), None
                except BaseException as err:  # noqa: BLE001  every waiter of the group must learn it
                    batch, error = "", err
                finally:
                    self._cond.acquire()
                    self._busy = False
                for waiting in group:
                    waiting.done, waiting.batch, waiting.error = True, batch, error
                self._cond.notify_all()
        if entry.error is not None:
            raise EventLogError(str(entry.error)) from entry.error
        return entry.batch

    def close(self) -> None:
        """Roll what the segment holds, so that the sensor sees it now rather than at the next start."""
        self._closed.set()
        self._exclusively(self._roll_reporting)
        if self._fd is not None:  # the roll failed: the segment stays for the next start to roll
            os.close(self._fd)
            self._fd = None

    def _commit(self, group: list[_Waiting]) -> str:
        data = b"".join(waiting.lines for waiting in group)
        try:
            if self._fd is None:
                self._open_segment()
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError as err:
            if self._fd is not None:
                # Best effort: a partial write must not come back as events nobody acknowledged; the
                # write's own error is what the clients are told.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)
            raise EventLogError(f"{self._path if self._fd is not None else self.folder}: events not recorded: "
                                f"{err.strerror or err} (nothing of this request was acknowledged)") from err
        self._size += len(data)
        if not self._count:
            self._first = time.monotonic()
        self._count += sum(waiting.count for waiting in group)
        name = self._name
        if self._count >= self.roll_count:
            self._roll_reporting()
        return name

    def _open_segment(self) -> None:
        """A fresh segment, locked before it gets the name a starting worker would take for an orphan."""
        self.folder.mkdir(parents=True, exist_ok=True)
        micros = max(time.time_ns() // 1000, self._last_micros + 1)  # a new name even within one microsecond
        while True:  # a name taken already (a reused pid, a clock set back) moves on by a microsecond
            when = datetime.fromtimestamp(micros // 10**6, UTC)
            name = f"events-{when:%Y%m%d-%H%M%S}-{micros % 10**6:06d}-p{os.getpid()}"
            path, hidden = self.folder / f"{name}.jsonl", self.folder / f".{name}.jsonl.new"
            try:
                fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                micros += 1
                continue
            if not path.exists() and not self.batch.path(self.incoming, name).exists():
                break
            os.close(fd)
            hidden.unlink()
            micros += 1
        self._last_micros = micros
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(hidden, path)
            fsync_dir(self.folder)  # the segment's name is on disk before any event in it is acknowledged
        except OSError:
            os.close(fd)  # a `.new` or empty segment left behind is removed by the next start's recovery
            raise
        self._fd, self._path, self._name, self._size, self._count = fd, path, name, 0, 0
        if self._ager is None:
            self._ager = threading.Thread(target=self._age, name="events-roll", daemon=True)
            self._ager.start()

    def _roll_reporting(self) -> None:
        """Roll the segment; a failed roll keeps every event in the segment and is tried again at the
        next append or age check (the events were acknowledged: the request must not fail now)."""
        if self._fd is None or not self._count:
            return
        try:
            self.batch.write(self.incoming, self._name, read_segment(self._path))
            os.unlink(self._path)  # still locked: no starting worker takes it for an orphan meanwhile
        except Exception as err:  # noqa: BLE001  reported and retried; the events stay safe in the segment
            print(f"serve: cannot roll {self._path} into {self.incoming}: {reason(err)}; its events stay "
                  "in the log and the roll is tried again", file=sys.stderr)
            return
        os.close(self._fd)
        self._fd = None

    def _age(self) -> None:
        """Roll a segment whose first event is serve.events_roll_seconds old, even without new events."""
        while not self._closed.wait(min(1.0, self.roll_seconds / 4)):
            self._exclusively(self._roll_if_old)

    def _roll_if_old(self) -> None:
        if self._fd is not None and self._count and time.monotonic() - self._first >= self.roll_seconds:
            self._roll_reporting()

    def _exclusively(self, work) -> None:
        """Run `work` as the only thread touching the segment; queued appends then take their turn."""
        with self._cond:
            while self._busy:
                self._cond.wait()
            self._busy = True
        try:
            work()
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # one encoder: json.dumps with options builds one per call


def _line(events: Sequence[Event]) -> bytes:
    """One request's events as one line: a JSON array of [user_id, item_id, timestamp, event] arrays,
    in ASCII (any id is then one line of valid UTF-8, whatever it holds)."""
    return _ENCODER.encode(list(events)).encode() + b"\n"


def read_segment(path: Path) -> list[Event]:
    """The events of a segment, in the order they were appended; a torn last line (a request's append
    cut by a kill: never acknowledged) and malformed lines are skipped with a warning naming file and line."""
    *lines, torn = Path(path).read_bytes().split(b"\n")
    if torn:
        warnings.warn(f"{path}:{len(lines) + 1}: dropped a torn last line of {len(torn)} bytes (an append "
                      "cut short by a kill; it was never acknowledged)", stacklevel=2)
    events = []
    for number, line in enumerate(lines, start=1):
        try:
            events += [Event(*row) for row in json.loads(line)]
        except (ValueError, TypeError) as err:
            warnings.warn(f"{path}:{number}: skipped a malformed record: {reason(err)}", stacklevel=2)
    return events


def recover(folder: Path, incoming: Path, batch: BatchFormat) -> list[Path]:
    """Roll every segment whose writer is gone (module docstring, 4); returns the batch files written."""
    written = []
    for path in sorted(Path(folder).glob("*.jsonl")) + sorted(Path(folder).glob(".*.jsonl.new")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # rolled by its worker, or recovered by another, since the listing
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.stat(path).st_ino != os.fstat(fd).st_ino:
                    continue  # rolled and removed between our open and our lock: another file now, if any
            except (BlockingIOError, FileNotFoundError):  # a live worker's segment; or it is gone already
                continue
            # A `.new` file never got its name, so never an event; a segment whose batch exists was rolled.
            if not path.name.startswith(".") and not batch.path(incoming, path.stem).exists():
                events = read_segment(path)
                if events:
                    written.append(batch.write(incoming, path.stem, events))
            path.unlink()
        finally:
            os.close(fd)
    return written



# ------------------------------------------------------------------------------------------ sessions

class SessionStore:
    """user -> the items of their latest events the service took, oldest first, with the batch each
    rolls into; at most `window` items a user (serve.session_window) and `max_users` users, least
    recently active dropped first (serve.events_max_users).

    Per process, in memory: no shared store (Redis, a database) to run, secure and keep alive, and a
    lookup costs a dict access. The price, with several workers: a user's next request sees their
    events only when it reaches the worker that took them (a client on one keep-alive connection stays
    on one worker); after a restart every worker starts from all of them (`rebuild`). Thread-safe."""

    def __init__(self, window: int, max_users: int):
        self.window, self.max_users = window, max_users
        self._users: OrderedDict[str, deque[tuple[str, str]]] = OrderedDict()
        self._lock = threading.Lock()
        self._trained: tuple[str | None, frozenset[str]] = (None, frozenset())

    def add(self, events: Sequence[Event], batch: str) -> None:
        with self._lock:
            for event in events:
                items = self._users.get(event.user_id)
                if items is None:
                    items = self._users[event.user_id] = deque(maxlen=self.window)
                    if len(self._users) > self.max_users:
                        self._users.popitem(last=False)
                else:
                    self._users.move_to_end(event.user_id)
                items.append((event.item_id, batch))

    def items(self, user_id: str, manifest: dict) -> list[str]:
        """The user's items that the version of `manifest` has not been trained on, oldest first."""
        with self._lock:
            items = self._users.get(user_id)
            if not items:
                return []
            self._users.move_to_end(user_id)
            if self._trained[0] != manifest["version"]:  # once per version: a swap brings a new lineage
                self._trained = (manifest["version"], trained_batches(manifest))
            trained = self._trained[1]
            return [item for item, batch in items if batch not in trained]


def trained_batches(manifest: dict) -> frozenset[str]:
    """Names of the service's batches among the log files a deployed version was built from."""
    files = next((link["files"] for link in manifest["lineage"] if link["name"] == RAW_LOGS), {})
    return frozenset(match.group(0) for path in files if (match := BATCH_NAME.search(path)))


def untrained_batch_files(data: DataParams, manifest: dict) -> dict[str, Path]:
    """The service's batch files under data.incoming_dir that the version of `manifest` was not
    trained on, by batch name (time order)."""
    incoming, trained = Path(data.incoming_dir), trained_batches(manifest)
    files = {}
    for path in find_log_files(incoming, data.format, data.generic)[0] if incoming.is_dir() else []:
        match = BATCH_NAME.search(path.relative_to(incoming).as_posix())
        if match and match.group(0) not in trained:
            files[match.group(0)] = path
    return dict(sorted(files.items()))


def read_batch(path: Path, data: DataParams) -> list[Event]:
    frame = read_interactions(path, data.format, data.generic)
    return [Event(user, item, int(when), None) for user, item, when
            in zip(frame["user_id"], frame["item_id"], frame["timestamp"])]


def rebuild(sessions: SessionStore, folder: Path, data: DataParams, manifest: dict) -> int:
    """Fill `sessions` with every event the version of `manifest` was not trained on: the segments
    still being written (other live workers'), then the service's batch files under
    data.incoming_dir that its lineage does not list, in name (time) order. Returns how many events it read."""
    found: dict[str, list[Event]] = {}
    for path in sorted(Path(folder).glob("*.jsonl")):
        try:
            found[path.stem] = read_segment(path)
        except FileNotFoundError:  # rolled since the listing: the batch files, listed next, hold it
            continue
    for name, path in untrained_batch_files(data, manifest).items():
        if name not in found:
            found[name] = read_batch(path, data)
    for name in sorted(found):
        sessions.add(found[name], name)
    return sum(map(len, found.values()))


# ---------------------------------------------------------------------------------- one worker's intake

class Intake:
    """What POST /events and the recommend path of one worker process share."""

    def __init__(self, params: Params, manifest: dict):
        """Roll the segments of dead workers, rebuild the sessions from disk, and open this worker's log."""
        cfg = params.serve
        self.rules, self.batch = params.validation, batch_format(params.data)
        folder, incoming = Path(cfg.events_log_dir), Path(params.data.incoming_dir)
        recover(folder, incoming, self.batch)
        self.sessions = SessionStore(cfg.session_window, cfg.events_max_users)
        self.rebuilt = rebuild(self.sessions, folder, params.data, manifest)
        self.log = EventLog(folder, incoming, self.batch, cfg.events_roll_count, cfg.events_roll_seconds)

    def check(self, rows: Sequence[tuple[str, str, int | None, str | None]]) -> tuple[list[Event], list[Problem]]:
        return check(rows, self.rules, self.batch, int(time.time()))

    def record(self, events: Sequence[Event]) -> None:
        """On disk (fsync), then in the sessions. Blocks: call it off the event loop."""
        self.sessions.add(events, self.log.append(events))

    def close(self) -> None:
        self.log.close()
