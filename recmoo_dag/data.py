"""Read raw logs of several formats into one canonical schema (the ingest and validate stages' core).

Canonical interactions: user_id (string), item_id (string), timestamp (int64, seconds UTC),
rating (float64, NaN for implicit feedback), optional event (string).
Canonical items: item_id (string), title (string), categories (list of strings), tags (list of
strings, the most often given first: free-text labels users put on items, where a log has them).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recmoo_dag.config import GenericFormat
from recmoo_dag.errors import DataError, quote, reason
from recmoo_dag.io import confined, is_in_progress

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)


@dataclass(frozen=True)
class RawLog:
    interactions: pd.DataFrame  # canonical interaction columns (+ event when present)
    items: pd.DataFrame | None  # canonical item columns, None when the log carries no metadata
    files: list[Path]  # the interaction files read, in reading order


FORMAT_PATTERNS = {  # interactions, item metadata, tags
    "recbole": ("*.inter", "*.item", None),
    "movielens-100k": ("u.data", "u.item", None),
    "movielens-csv": ("ratings.csv", "movies.csv", "tags.csv"),
}


def find_log_files(raw_dir: Path, fmt: str, generic: GenericFormat) -> tuple[list[Path], list[Path]]:
    """Interaction and item files below `raw_dir`, in a deterministic (sorted path) order."""
    inter_glob = FORMAT_PATTERNS[fmt][0] if fmt in FORMAT_PATTERNS else generic.pattern
    item_glob = FORMAT_PATTERNS[fmt][1] if fmt in FORMAT_PATTERNS else generic.items.pattern
    raw_dir = Path(raw_dir)
    inter = sorted(p for p in raw_dir.rglob(inter_glob) if _is_complete(p))
    items = sorted(p for p in raw_dir.rglob(item_glob) if _is_complete(p)) if item_glob else []
    return confined(inter, raw_dir), confined(items, raw_dir)


def find_tag_files(raw_dir: Path, fmt: str, generic: GenericFormat) -> list[Path]:
    """Files of tags users gave items (and, for generic logs, the tag-name lookup), sorted."""
    globs = [FORMAT_PATTERNS[fmt][2]] if fmt in FORMAT_PATTERNS else [generic.tags.pattern, generic.tag_names.pattern]
    return confined(sorted({p for glob in globs if glob for p in Path(raw_dir).rglob(glob) if _is_complete(p)}),
                    Path(raw_dir))


def _is_complete(path: Path) -> bool:
    return path.is_file() and not is_in_progress(path.name)


def read_interactions(path: Path, fmt: str, generic: GenericFormat) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():  # `recmoo validate PATH` is given paths by hand
        raise DataError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    readers = {
        "recbole": _read_recbole_inter,
        "movielens-100k": _read_ml100k_data,
        "movielens-csv": _read_ml_ratings_csv,
        "generic": lambda p: _read_generic(p, generic),
    }
    try:
        frame = readers[fmt](path)
    except DataError:
        raise
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError, OSError) as err:
        raise DataError(f"{path}: cannot be read as {fmt!r} logs: {reason(err)}{_hint(err, fmt)}") from err
    if frame.empty:
        raise DataError(f"{path}: holds no interaction rows (header only?)")
    return frame


def read_items(path: Path, fmt: str, generic: GenericFormat) -> pd.DataFrame:
    path = Path(path)
    readers = {
        "recbole": _read_recbole_item,
        "movielens-100k": _read_ml100k_item,
        "movielens-csv": _read_ml_movies_csv,
        "generic": lambda p: _read_generic_items(p, generic),
    }
    try:
        return readers[fmt](path)
    except DataError:
        raise
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError, OSError) as err:
        raise DataError(f"{path}: cannot be read as {fmt!r} item metadata: {reason(err)}{_hint(err, fmt)}") from err


def _hint(err: Exception, fmt: str) -> str:
    if not isinstance(err, UnicodeDecodeError):
        return ""
    where = "set data.generic.encoding or re-export it as UTF-8" if fmt == "generic" else "re-export it as UTF-8"
    return f" (the file is not in the expected text encoding: {where})"


def read_logs(raw_dir: Path, fmt: str, generic: GenericFormat) -> RawLog:
    """Read every log file of `fmt` below `raw_dir`, concatenate them and drop re-delivered rows."""
    inter_files, item_files = find_log_files(raw_dir, fmt, generic)
    if not inter_files:
        pattern = FORMAT_PATTERNS[fmt][0] if fmt in FORMAT_PATTERNS else generic.pattern
        raise DataError(f"{raw_dir}: no interaction files matching {pattern!r} "
                        f"for data.format {fmt!r}")
    log = combine(
        [read_interactions(p, fmt, generic) for p in inter_files],
        [read_items(p, fmt, generic) for p in item_files],
        inter_files,
    )
    tags = read_tags(raw_dir, fmt, generic)
    if tags is None:
        return log
    items = log.items if log.items is not None else pd.DataFrame({
        "item_id": tags["item_id"], "title": pd.Series(pd.NA, index=tags.index, dtype="string"),
        "categories": [[] for _ in range(len(tags))]})
    merged = items.drop(columns="tags", errors="ignore").merge(tags, on="item_id", how="outer")
    merged["tags"] = [t if isinstance(t, list) else [] for t in merged["tags"]]
    merged["categories"] = [c if isinstance(c, list) else [] for c in merged["categories"]]
    return RawLog(log.interactions, merged.sort_values("item_id", kind="stable").reset_index(drop=True), log.files)


def read_tags(raw_dir: Path, fmt: str, generic: GenericFormat) -> pd.DataFrame | None:
    """item_id -> tags (each item's distinct tags, lower-cased, the most often given first, ties by
    name), from the format's tag files; None when the log has none."""
    files = find_tag_files(raw_dir, fmt, generic)
    names = [p for p in files if fmt == "generic" and generic.tag_names.pattern
             and p.match(generic.tag_names.pattern)]
    files = [p for p in files if p not in names]
    if not files:
        return None
    try:
        if fmt == "movielens-csv":
            pairs = pd.concat([_read_text(p)[["movieId", "tag"]].set_axis(["item", "tag"], axis=1) for p in files])
        else:
            spec = generic
            pairs = pd.concat([_read_generic_table(p, spec, spec.tags.sep, None)[[spec.tags.item_col, spec.tags.tag_col]]
                               .set_axis(["item", "tag"], axis=1) for p in files])
            if names:
                lookup = pd.concat([_read_text(p, sep=spec.tag_names.sep, encoding=spec.tag_names.encoding)
                                    for p in names])
                pairs["tag"] = pairs["tag"].astype("string").str.strip().map(
                    dict(zip(lookup[spec.tag_names.id_col].astype(str).str.strip(), lookup[spec.tag_names.name_col])))
    except (KeyError, UnicodeDecodeError, pd.errors.ParserError, ValueError, OSError) as err:
        raise DataError(f"{', '.join(map(str, files + names))}: cannot be read as tags: {reason(err)}"
                        f"{_hint(err, fmt)}") from err
    pairs = pd.DataFrame({"item_id": _ids(pairs["item"]), "tag": pairs["tag"].astype("string").str.strip().str.lower()})
    pairs = pairs.dropna()
    pairs = pairs[pairs["tag"] != ""]
    counts = pairs.value_counts(["item_id", "tag"]).reset_index(name="n")
    counts = counts.sort_values(["item_id", "n", "tag"], ascending=[True, False, True], kind="stable")
    return counts.groupby("item_id", sort=True)["tag"].agg(list).reset_index(name="tags")


def combine(frames: list[pd.DataFrame], item_frames: list[pd.DataFrame], files: list[Path]) -> RawLog:
    """Concatenate batches; a row repeated from an earlier file is a re-delivery and is dropped.

    Repeats inside one file are kept on purpose: they are an exporter bug that validation must see.
    """
    for batch, frame in enumerate(frames):
        frame["_batch"] = np.int32(batch)
    interactions = pd.concat(frames, ignore_index=True)
    columns = [c for c in interactions.columns if c != "_batch"]
    row_hash = pd.util.hash_pandas_object(interactions[columns], index=False)
    first_batch = interactions["_batch"].groupby(row_hash.to_numpy()).transform("min")
    interactions = interactions[interactions["_batch"].to_numpy() == first_batch.to_numpy()]
    interactions = interactions.drop(columns="_batch").reset_index(drop=True)
    items = None
    if item_frames:
        items = pd.concat(item_frames, ignore_index=True)
        items = items.drop_duplicates("item_id", keep="last").sort_values("item_id", kind="stable")
        items = items.reset_index(drop=True)
    return RawLog(interactions=interactions, items=items, files=list(files))


def _canonical(frame: pd.DataFrame, path: Path, user: str, item: str, ts: str | list[str],
               rating: str | None, event: str | None, ts_unit: str = "s",
               ts_format: str | None = None) -> pd.DataFrame:
    ts_columns = ts if isinstance(ts, list) else [ts]
    missing = [c for c in (user, item, *ts_columns, rating, event) if c is not None and c not in frame.columns]
    if missing:
        found = ", ".join(quote(str(c)) for c in frame.columns[:8])
        hint = " (everything landed in one column: wrong separator?)" if frame.shape[1] == 1 else ""
        if any(str(c).startswith("Unnamed: ") for c in frame.columns):  # pandas' name for an empty header cell
            hint += " (the header has an empty column name)"
        raise DataError(f"{path}: missing column(s) {missing}; found [{found}]{hint}")
    # A date spread over columns (day, month, year ...) is read as their values joined by "-".
    when = frame[ts_columns].astype("string").agg("-".join, axis=1) if len(ts_columns) > 1 else frame[ts]
    out = pd.DataFrame({
        "user_id": _ids(frame[user]),
        "item_id": _ids(frame[item]),
        "timestamp": _timestamps(when, path, "-".join(ts_columns), ts_unit, ts_format),
        "rating": _ratings(frame[rating], path, rating) if rating else np.full(len(frame), np.nan),
    })
    if event:
        out["event"] = frame[event].astype("string")
    return out


def _ids(column: pd.Series) -> pd.Series:
    ids = column.astype("string").str.strip()
    return ids.mask(ids == "")


def _timestamps(column: pd.Series, path: Path, name: str, unit: str, fmt: str | None) -> np.ndarray:
    if unit in ("iso", "strptime"):
        parsed = pd.to_datetime(column, format="ISO8601" if unit == "iso" else fmt, utc=True, errors="coerce")
        _reject_unparsed(parsed.isna(), column, path, name)
        return ((parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)
    numeric = pd.to_numeric(column, errors="coerce")
    _reject_unparsed(numeric.isna(), column, path, name)
    divisor = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
    return (numeric.to_numpy(dtype=np.float64) // divisor).astype(np.int64)


def _reject_unparsed(bad: pd.Series, column: pd.Series, path: Path, name: str) -> None:
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy())[:3]
        examples = ", ".join(quote(v) for v in column.iloc[rows])
        raise DataError(f"{path}: column {name!r}: {int(bad.sum())} unparseable timestamp(s), e.g. "
                        f"[{examples}] at data rows {(rows + 1).tolist()} "
                        f"(a truncated line or the wrong timestamp unit/format?)")


def _ratings(column: pd.Series, path: Path, name: str) -> np.ndarray:
    numeric = pd.to_numeric(column, errors="coerce")
    bad = numeric.isna() & column.notna() & (column.astype("string").str.strip() != "")
    if bad.any():
        examples = ", ".join(quote(v) for v in column[bad].head(3))
        raise DataError(f"{path}: column {name!r}: non-numeric ratings, e.g. [{examples}]")
    return numeric.to_numpy(dtype=np.float64)


def _categories(column: pd.Series, sep: str | None) -> pd.Series:
    text = column.astype("string").fillna("")
    parts = text.str.split(sep) if sep is not None else text.str.split()
    return parts.map(lambda cats: sorted({c.strip() for c in cats if c.strip()}))


def _read_text(path: Path, **kwargs) -> pd.DataFrame:
    # utf-8-sig strips a BOM; pandas handles CRLF itself. Ids stay strings: "007" is not 7.
    kwargs.setdefault("encoding", "utf-8-sig")
    if kwargs.get("header", 0) is not None and kwargs.get("names") is None:
        # pandas renames a repeated column "x.1" and reads the first one: check the header as written
        header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False,
                             sep=kwargs.get("sep", ","), encoding=kwargs["encoding"])
        _unique_columns(header.iloc[0] if len(header) else [], path)
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], **kwargs)


def _unique_columns(names, path: Path, hint: str = "") -> None:
    """A header naming a column twice is rejected: which of the two is meant would be a guess."""
    counts = Counter(str(name) for name in names if str(name).strip())
    repeated = [(name, n) for name, n in counts.items() if n > 1]
    if repeated:
        name, n = repeated[0]
        raise DataError(f"{path}: column {quote(name)} appears {n} times in the header{hint}; column names "
                        "must be unique (rename or drop the repeated column)")


def _recbole_frame(path: Path) -> pd.DataFrame:
    frame = _read_text(path, sep="\t")
    # RecBole headers are typed, "user_id:token": the type is a hint for RecBole, not part of the name.
    frame.columns = [str(c).split(":", 1)[0] for c in frame.columns]
    _unique_columns(frame.columns, path, " (the :type after a RecBole column name is not part of the name)")
    return frame


def _read_recbole_inter(path: Path) -> pd.DataFrame:
    frame = _recbole_frame(path)
    rating = "rating" if "rating" in frame.columns else None
    return _canonical(frame, path, "user_id", "item_id", "timestamp", rating, None)


def _read_recbole_item(path: Path) -> pd.DataFrame:
    frame = _recbole_frame(path)
    title = next((c for c in ("movie_title", "title", "item_name") if c in frame.columns), None)
    cats = next((c for c in ("class", "genre", "categories", "category") if c in frame.columns), None)
    return _items(frame, path, "item_id", title, cats, sep=None)


def _items(frame: pd.DataFrame, path: Path, item: str, title: str | None, cats: str | None,
           sep: str | None) -> pd.DataFrame:
    if item not in frame.columns:
        raise DataError(f"{path}: item metadata has no {item!r} column")
    return pd.DataFrame({
        "item_id": _ids(frame[item]),
        "title": frame[title].astype("string") if title else pd.Series(pd.NA, index=frame.index, dtype="string"),
        "categories": _categories(frame[cats], sep) if cats else [[] for _ in range(len(frame))],
        "tags": [[] for _ in range(len(frame))],
    }).dropna(subset=["item_id"])


def _read_ml100k_data(path: Path) -> pd.DataFrame:
    frame = _read_text(path, sep="\t", header=None, names=["user", "item", "rating", "ts"], encoding="latin-1")
    return _canonical(frame, path, "user", "item", "ts", "rating", None)


def _read_ml100k_item(path: Path) -> pd.DataFrame:
    names = ["item", "title", "release", "video_release", "url", *ML100K_GENRES]
    frame = _read_text(path, sep="|", header=None, names=names, encoding="latin-1")
    flags = frame[list(ML100K_GENRES)].fillna("0").to_numpy() == "1"
    genres = np.array(ML100K_GENRES)
    frame["genres"] = ["|".join(genres[row]) for row in flags]
    return _items(frame, path, "item", "title", "genres", sep="|")


def _read_ml_ratings_csv(path: Path) -> pd.DataFrame:
    frame = _read_text(path)
    return _canonical(frame, path, "userId", "movieId", "timestamp", "rating", None)


def _read_ml_movies_csv(path: Path) -> pd.DataFrame:
    frame = _read_text(path)
    frame["genres"] = frame.get("genres", pd.Series("", index=frame.index)).replace("(no genres listed)", "")
    return _items(frame, path, "movieId", "title", "genres", sep="|")


def _read_generic_table(path: Path, spec: GenericFormat, sep: str, names: list[str] | None) -> pd.DataFrame:
    if spec.file_type == "parquet":
        # pyarrow's own error for a repeated column is a multi-line schema dump
        _unique_columns(pq.read_schema(path).names, path)
        return pd.read_parquet(path)
    if spec.file_type == "jsonl":
        return pd.read_json(path, lines=True, dtype=False, encoding=spec.encoding)
    encoding = "utf-8-sig" if spec.encoding.lower().replace("_", "-") == "utf-8" else spec.encoding
    return _read_text(path, sep=sep, header=None if names else 0, names=names, encoding=encoding)


def _read_generic(path: Path, spec: GenericFormat) -> pd.DataFrame:
    frame = _read_generic_table(path, spec, spec.sep, None if spec.header else spec.names)
    return _canonical(frame, path, spec.user_col, spec.item_col, spec.timestamp_col, spec.rating_col,
                      spec.event_col, spec.timestamp_unit, spec.timestamp_format)


def _read_generic_items(path: Path, spec: GenericFormat) -> pd.DataFrame:
    frame = _read_generic_table(path, spec, spec.items.sep, None)
    return _items(frame, path, spec.items.item_id_col, spec.items.title_col, spec.items.categories_col,
                  spec.items.categories_sep)


# --------------------------------------------------------------------------- the ingest stage's outputs

def drop_repeats(interactions: pd.DataFrame, keep: str) -> pd.DataFrame:
    """data.repeats: every (user, item) event ("all"), or only each pair's earliest ("first") or
    latest ("last"); ties in time go to the earlier row. Row order is kept."""
    if keep == "all":
        return interactions
    by_time = interactions.sort_values("timestamp", kind="stable")
    kept = by_time.drop_duplicates(["user_id", "item_id"], keep=keep).index
    return interactions.loc[interactions.index.isin(kept)].reset_index(drop=True)


def items_table(log: RawLog) -> pd.DataFrame:
    """The log's item metadata, or an empty table with the canonical item columns when it has none."""
    if log.items is not None:
        return log.items
    return pd.DataFrame({"item_id": pd.Series(dtype="string"), "title": pd.Series(dtype="string"),
                         "categories": pd.Series(dtype=object), "tags": pd.Series(dtype=object)})


def ingest_stats(log: RawLog) -> dict:
    """What metrics/ingest.json reports about an ingested log."""
    frame = log.interactions
    return {
        "rows": len(frame),
        "users": int(frame["user_id"].nunique()),
        "items": int(frame["item_id"].nunique()),
        "first_timestamp": int(frame["timestamp"].min()),
        "last_timestamp": int(frame["timestamp"].max()),
        "rated_share": float(frame["rating"].notna().mean()),
        "files": [str(p) for p in log.files],
        "has_item_metadata": log.items is not None,
    }
