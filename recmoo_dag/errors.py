"""The project's error types, in one place.

Every one is a `RecmooError`: a problem with the params, the input data or the artifacts on disk
that the user can fix. `recmoo` prints its message on one line and exits 1, without a traceback,
and a stage that raises one has written nothing downstream. Any other exception is a bug and
keeps its traceback. Messages quote input values through `quote` and library errors through
`reason`, so a 50 MB line in a log never becomes a 50 MB error message.
"""
from __future__ import annotations

QUOTE_LIMIT = 200  # characters of one quoted value: enough to recognise it, short enough to read


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """repr(value), cut to `limit` characters with the full length said: how messages quote input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def reason(err: BaseException, limit: int = 2 * QUOTE_LIMIT) -> str:
    """A library's error text on one line and cut: pandas and pyarrow quote input rows and schemas in them."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class RecmooError(Exception):
    """A failure whose message tells the user what is wrong and what to do."""


class ConfigError(RecmooError, ValueError):
    """params.yaml is missing, not YAML, or does not match the schema."""


class DataError(RecmooError, ValueError):
    """A raw log cannot be fetched or read into the canonical schema; the message names file and column."""


class ValidationFailed(RecmooError):
    """The data-quality suite rejected the ingested data; the validated copies were not written."""


class FeaturesError(RecmooError, ValueError):
    """The interactions cannot support the requested filtering or split."""


class InputError(RecmooError, ValueError):
    """An upstream artifact is missing, malformed, or out of step with the others (re-run its stage)."""


class StoreError(RecmooError, RuntimeError):
    """The deployment store is missing, empty, cannot be written (full, read-only), or was asked for
    a version it does not hold."""


class EventLogError(RecmooError, RuntimeError):
    """The service's event log cannot be written (full, read-only); the events of the request were not
    acknowledged, and nothing of them is kept."""
