"""The batch files the service rolls its events into: named and written so that `recmoo ingest`
(recmoo_dag/data.py) reads them back with the project's data.format, like any other log file.

    recbole          <incoming>/<name>.inter           TSV, typed header, event kept as event:token
    movielens-100k   <incoming>/<name>/u.data          TSV, no header, latin-1, rating left empty
    movielens-csv    <incoming>/<name>/ratings.csv     CSV with header, rating left empty
    generic          data.generic.pattern with its "*" replaced by the name (a pattern without "*":
                     <incoming>/<name>/<pattern>), in its file type, columns, separator, header or
                     names, encoding and timestamp unit; columns the service has no value for stay empty

A batch is written as `<file>.part` (a name ingest and the incoming-data sensor skip, io.is_in_progress),
fsynced, renamed to its final name (atomic) and its folder fsynced: readers see all of it or nothing.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from recmoo_dag.config import DataParams
from recmoo_dag.data import FORMAT_PATTERNS
from recmoo_dag.errors import ConfigError
from recmoo_dag.io import fsync_dir, fsync_file


class Event(NamedTuple):
    """One event as the service takes it: canonical ids (stripped, as ingest strips them), seconds UTC."""

    user_id: str
    item_id: str
    timestamp: int
    event: str | None


# The canonical column a file column holds: "user_id", "item_id", "timestamp", "rating" (always empty:
# the service takes no ratings), "event", or None (a column of `data.generic.names` the service cannot fill).
Column = tuple[str, str | None]


@dataclass(frozen=True)
class BatchFormat:
    fmt: str  # data.format, for messages
    pattern: str  # the interaction files' glob of data.format
    columns: tuple[Column, ...]  # (file column name, canonical column) in file order
    file_type: str  # csv | jsonl | parquet
    header: bool
    sep: str
    encoding: str
    timestamp_unit: str  # s | ms | us | ns | iso | strptime
    timestamp_format: str | None
    timestamp_parts: int  # a date spread over several columns (strptime joined by "-"), else 1

    def path(self, incoming: Path, batch: str) -> Path:
        """Where the batch named `batch` lands: that name in the pattern's "*", or a folder of that name."""
        relative = self.pattern.replace("*", batch) if "*" in self.pattern else f"{batch}/{self.pattern}"
        return Path(incoming) / relative

    def unwritable(self, event: Event) -> list[tuple[str, str]]:
        """(column, rule) for each text of `event` the batch file's encoding cannot hold: refused up
        front, since a roll that fails on it would never succeed."""
        if self.file_type == "parquet" or self.encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
            return []  # any text the request schema accepts (no lone surrogates) encodes
        rule = f"must be encodable as {self.encoding} (data.format {self.fmt} writes its batch files so)"
        return [(column, rule) for column, text in (("user_id", event.user_id), ("item_id", event.item_id),
                                                   ("event", event.event or "")) if not _encodable(text, self.encoding)]

    def write(self, incoming: Path, batch: str, events: list[Event]) -> Path:
        """The batch named `batch` holding `events`, all of it or nothing visible (module docstring);
        returns its path."""
        final = self.path(incoming, batch)
        final.parent.mkdir(parents=True, exist_ok=True)
        part = final.with_name(final.name + ".part")
        rows = [self._row(event) for event in events]
        if self.file_type == "parquet":
            pd.DataFrame(rows, columns=[name for name, _ in self.columns]).to_parquet(part, index=False)
            fsync_file(part)
        else:
            with open(part, "w", encoding=self.encoding, newline="") as handle:
                if self.file_type == "jsonl":
                    names = [name for name, _ in self.columns]
                    handle.writelines(json.dumps(dict(zip(names, row)), ensure_ascii=False) + "\n" for row in rows)
                else:
                    lines = [[name for name, _ in self.columns]] if self.header else []
                    handle.writelines(self.sep.join(_field(value, self.sep) for value in line) + "\n"
                                      for line in lines + rows)
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(part, final)
        fsync_dir(final.parent)
        if final.parent != Path(incoming):
            fsync_dir(Path(incoming))  # the batch's new folder
        return final

    def _row(self, event: Event) -> list:
        values = {"user_id": event.user_id, "item_id": event.item_id, "event": event.event}
        stamp = self._timestamp(event.timestamp)
        parts = stamp.split("-") if self.timestamp_parts > 1 else [stamp]
        row, taken = [], 0
        for _, canonical in self.columns:
            if canonical == "timestamp":
                row.append(parts[taken])
                taken += 1
            else:
                row.append(values.get(canonical))  # rating and unknown columns: empty
        return row

    def _timestamp(self, seconds: int) -> int | str:
        scale = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}.get(self.timestamp_unit)
        if scale is not None:
            return seconds * scale  # ingest floor-divides: the same seconds come back
        when = datetime.fromtimestamp(seconds, UTC)
        return when.isoformat() if self.timestamp_unit == "iso" else when.strftime(self.timestamp_format)


def batch_format(data: DataParams) -> BatchFormat:
    """The BatchFormat of data.format; ConfigError for a generic layout no batch file can match."""
    if data.format == "recbole":
        columns = (("user_id:token", "user_id"), ("item_id:token", "item_id"), ("timestamp:float", "timestamp"),
                   ("event:token", "event"))
        return BatchFormat("recbole", FORMAT_PATTERNS["recbole"][0], columns, "csv", True, "\t", "utf-8", "s", None, 1)
    if data.format == "movielens-100k":
        columns = (("user", "user_id"), ("item", "item_id"), ("rating", "rating"), ("ts", "timestamp"))
        return BatchFormat(data.format, FORMAT_PATTERNS[data.format][0], columns, "csv", False, "\t", "latin-1",
                           "s", None, 1)
    if data.format == "movielens-csv":
        columns = (("userId", "user_id"), ("movieId", "item_id"), ("rating", "rating"), ("timestamp", "timestamp"))
        return BatchFormat(data.format, FORMAT_PATTERNS[data.format][0], columns, "csv", True, ",", "utf-8", "s", None, 1)
    spec = data.generic
    where = f"data.generic (pattern {spec.pattern!r})"
    if any(c in spec.pattern for c in "?[]/"):
        raise ConfigError(f"{where}: POST /events names its batch files from the pattern's '*' only; "
                          "use a pattern such as '*.csv' (no '?', '[...]' or folders)")
    if spec.file_type == "csv" and len(spec.sep) != 1:
        raise ConfigError(f"{where}: sep {spec.sep!r}: POST /events writes one-character separators only")
    stamps = spec.timestamp_col if isinstance(spec.timestamp_col, list) else [spec.timestamp_col]
    canonical = {spec.user_col: "user_id", spec.item_col: "item_id", **dict.fromkeys(stamps, "timestamp")}
    canonical.update({name: role for name, role in ((spec.rating_col, "rating"), (spec.event_col, "event")) if name})
    if spec.header or spec.file_type != "csv":
        columns = tuple(canonical.items())
    else:
        missing = sorted(set(canonical) - set(spec.names))
        if missing:
            raise ConfigError(f"{where}: names {spec.names} lack the mapped column(s) {missing}")
        columns = tuple((name, canonical.get(name)) for name in spec.names)
    if len(stamps) > 1 and len(spec.timestamp_format.split("-")) != len(stamps):
        raise ConfigError(f"{where}: timestamp_format {spec.timestamp_format!r} must have one '-'-separated part "
                          f"per timestamp column {stamps}: POST /events splits the formatted date on '-'")
    return BatchFormat("generic", spec.pattern, columns, spec.file_type, spec.header, spec.sep, spec.encoding,
                       spec.timestamp_unit, spec.timestamp_format, len(stamps))


def _field(value, sep: str) -> str:
    """A value as pandas' reader reads it back: quoted (quotes doubled) when it holds the separator, a
    quote or a line break. Not the csv module: it leaves a lone carriage return bare, which pandas
    takes for the end of the line."""
    text = "" if value is None else str(value)
    if any(special in text for special in (sep, '"', "\n", "\r")):
        return '"' + text.replace('"', '""') + '"'
    return text


def _encodable(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True
