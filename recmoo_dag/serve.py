"""`recmoo serve`: the HTTP service of the deployed policy (FastAPI + uvicorn). Its OpenAPI schema is
at /openapi.json, Swagger UI at /docs and ReDoc at /redoc, both from files of the fastapi-offline
package: no CDN, so the docs load on a machine without internet.

    POST /recommend  {"user_id"?, "recent_items"?, "k"?, "exclude"?}
                     -> {"items": [{"item_id", "title", "score"}], "policy_version", "source"}
    GET  /health     -> {"status": "ok", "policy_version"}
    GET  /policy     -> the served version: decision variables, rule, gate, test figures, lineage summary
    GET  /version    -> the served version, the gate's verdict, its test and valid figures
    POST /events     {"events": [{"user_id", "item_id", "timestamp"?, "event"?}, ...]}
                     -> {"accepted", "unknown_items", "policy_version"}, once the events are on disk

POST /events (recmoo_dag/events.py: the rules, the durable log and its batch files) answers 200 when
every event is written and fsynced; 413 as above; 422 naming the row and the rule for a row that
breaks a rule (the request schema's, or validation's for one event) and then writes nothing; 503
when the log cannot be written (nothing acknowledged). A user's events then join their next
request's session, before its recent_items, in the worker that took them.

The answer logic (and the fallbacks for unknown users and items) is recmoo_dag/recommender.py; this
module only validates requests and swaps versions. POST /recommend answers
- 200 with the list: k items, or every item left when fewer remain that are neither seen, recent
  nor excluded (at most the deployed N candidates);
- 413 for a body over serve.max_body_bytes (or a Content-Length that is not a number), before parsing;
- 503 with Retry-After when the request needs a forward pass and serve.queue_size requests already
  wait for one (recmoo_dag/batcher.py): a refusal at once instead of an unbounded wait;
- 422 for any other bad body, with {"detail": [{"loc", "msg", "type"}]} that never echoes the input:
  not declared JSON (application/json or application/*+json); not UTF-8 (RFC 8259 section 8.1; a
  leading byte order mark is ignored); not JSON, which includes an integer of more digits than
  Python converts (4,300) and nesting deeper than the parser's recursion limit (about 1,000); not an
  object; unknown fields; wrong types; k outside [1, serve.max_k]; lists over serve.max_recent_items
  or serve.max_exclude; string ids over 128 characters or holding lone surrogates.
Types are what the published schema says: ids are JSON strings or integers (answers use strings), and
an integer is any JSON number with a zero fractional part, as JSON Schema defines it (k = 85.0 is
85; 85.5, "85", true and NaN are refused). Unknown paths answer 404, other methods 405. Under
`recmoo serve`, the connection limits of recmoo_dag/serve_http.py answer before any of this.
"""
# No `from __future__ import annotations`: FastAPI reads the endpoint's body type at runtime, and
# that type is built per app (its limits come from params).
import asyncio
import contextlib
import gc
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    StrictStr,
    StringConstraints,
    Tag,
)

from recmoo_dag.batcher import MicroBatcher, Overloaded
from recmoo_dag.config import Params, ServeParams, load_params
from recmoo_dag.errors import EventLogError
from recmoo_dag.events import Intake, Problem
from recmoo_dag.recommender import LiveRecommender, Recommended

ID_MAX_CHARS = 128  # ids are short keys; longer strings are garbage, not lookups
RETRY_AFTER_S = 1  # HTTP's smallest delay (whole seconds); a full queue drains in tens of milliseconds


def _integral_float_as_int(value: Any) -> Any:
    """85.0 -> 85: the schema's "integer" is JSON Schema's, any number with a zero fractional part.
    Everything else goes on to StrictInt, which refuses fractions, strings, booleans and NaN."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _json_type(value: Any) -> str:
    return "string" if isinstance(value, str) else "integer"


Integer = Annotated[StrictInt, BeforeValidator(_integral_float_as_int)]
# The branch is chosen by the value's type, so an error is one message at ("user_id", "string" or
# "integer"), not one per branch under pydantic's internal names.
Id = Annotated[Annotated[StrictStr, StringConstraints(max_length=ID_MAX_CHARS), Tag("string")]
               | Annotated[Integer, Tag("integer")], Discriminator(_json_type)]


class Item(BaseModel):
    item_id: str
    title: str | None = Field(description="null when the catalog has no title")
    score: float = Field(description="the model's score for the item (logit; log popularity in the "
                                     "popularity fallback); the order is the policy's")


class RecommendResponse(BaseModel):
    items: list[Item]
    policy_version: str
    source: Literal["session", "user", "popularity"] = Field(
        description="session: scored from the user's events POST /events took, then recent_items; user: a known "
                    "user's candidates, precomputed (scored again when exclusions leave fewer than k); popularity: "
                    "unknown user without usable recent items or events")


def request_model(settings: ServeParams) -> type[BaseModel]:
    """The body of POST /recommend, with the limits of `settings` (params.yaml: serve)."""

    class RecommendRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        user_id: Id | None = Field(None, description="a user of the training data; unknown ones fall back")
        recent_items: list[Id] = Field(default_factory=list, max_length=settings.max_recent_items,
                                       description="the live session, oldest first; unknown items are ignored")
        k: Integer = Field(settings.default_k, ge=1, le=settings.max_k, description="list length")
        exclude: list[Id] = Field(default_factory=list, max_length=settings.max_exclude,
                                  description="items never to return")

    return RecommendRequest


def create_app(store_dir: str | Path, settings: ServeParams, params: Params | None = None) -> FastAPI:
    """The service of the version `store_dir` serves; with the project's `params`, it takes events too
    (POST /events needs data.format, data.incoming_dir and the validation rules)."""
    live = LiveRecommender(store_dir, settings.reload_check_ms, settings.session_window,
                           settings.history_cache_mb << 20, settings.torch_threads if settings.forward_process else 0)
    batcher = MicroBatcher(settings.max_batch, settings.batch_wait_ms, settings.queue_size)
    RecommendRequest = request_model(settings)
    intake = Intake(params, live.get().manifest) if params is not None else None

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        if intake is not None:
            intake.close()  # rolls this worker's segment: the sensor sees its events now, not at the next start

    app = FastAPIOffline(title="recmoo_dag", lifespan=lifespan,
                         summary="Re-ranked recommendations of the deployed Pareto policy.")
    app.router.route_class = ContractRoute  # the routes declared below read JSON bodies by the contract
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(Overloaded, overloaded)
    app.state.live, app.state.batcher = live, batcher

    detail = {"application/json": {"schema": {"properties": {"detail": {"type": "string"}}}}}

    def seen(recommender, user_id) -> list[str]:
        """The user's events this worker took that the served version was not trained on (events.SessionStore)."""
        return [] if intake is None or user_id is None else intake.sessions.items(str(user_id), recommender.manifest)

    @app.post("/recommend", response_model=RecommendResponse, responses={
        413: {"description": f"Body over {settings.max_body_bytes} bytes (serve.max_body_bytes)", "content": detail},
        503: {"description": f"{settings.queue_size} requests already wait for a forward pass (serve.queue_size); "
                             "retry after the Retry-After header's seconds", "content": detail}})
    async def recommend(body: RecommendRequest) -> RecommendResponse:  # type: ignore[valid-type]
        # Lookups answer inline (tens of microseconds of numpy); a forward pass waits for the
        # micro-batcher, which shares it with the requests that arrive meanwhile (recmoo_dag/batcher.py
        # says where it runs).
        recommender = live.get()
        answer = recommender.prepare(
            None if body.user_id is None else str(body.user_id),
            [*seen(recommender, body.user_id), *map(str, body.recent_items)], body.k, [str(i) for i in body.exclude])
        if isinstance(answer, Recommended):
            batcher.answered_inline += 1
        else:
            answer = await batcher.submit(recommender, answer)
        return RecommendResponse(items=answer.items, policy_version=answer.version, source=answer.source)

    if intake is not None:
        EventsRequest = events_model(settings)

        @app.post("/events", response_model=EventsResponse, responses={
            413: {"description": f"Body over {settings.max_body_bytes} bytes (serve.max_body_bytes)", "content": detail},
            503: {"description": "The event log cannot be written: nothing was acknowledged", "content": detail}})
        async def take_events(body: EventsRequest) -> Any:  # type: ignore[valid-type]
            recommender = live.get()
            batcher.answered_inline += 1
            events, problems = intake.check([(str(e.user_id), str(e.item_id), e.timestamp, e.event)
                                             for e in body.events])
            if problems:
                return broken_rules(problems, intake.rules.max_failed_examples)
            try:
                await asyncio.to_thread(intake.record, events)  # on disk (fsync) before the answer
            except EventLogError as err:
                print(f"serve: {err}", file=sys.stderr)  # the paths and the OS's reason stay in the service's log
                return JSONResponse({"detail": "events not recorded: the event log cannot be written"}, status_code=503)
            unknown = sum(event.item_id not in recommender.item_index for event in events)
            return EventsResponse(accepted=len(events), unknown_items=unknown, policy_version=recommender.version)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "policy_version": live.get().version}

    @app.get("/policy")
    async def policy() -> dict:
        return policy_summary(live.get().manifest)

    @app.get("/version")
    async def version() -> dict:
        return version_summary(live.get().manifest)

    return app


class ContractRequest(Request):
    """A request whose JSON body is read as the module docstring says: UTF-8 only, and every body
    the parser refuses is malformed JSON. FastAPI turns a JSONDecodeError into a 422 but any other
    parse failure (a UnicodeDecodeError, the int-digit limit's ValueError, a RecursionError) into a
    400, so each is raised as a JSONDecodeError with a fixed reason that never quotes the body."""

    async def json(self) -> Any:
        body = await self.body()
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise json.JSONDecodeError("body is not UTF-8", "", err.start) from None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise
        except ValueError:  # the only other ValueError of json.loads: int() past the digit limit
            raise json.JSONDecodeError(f"an integer of more than {sys.get_int_max_str_digits()} digits",
                                       "", 0) from None
        except RecursionError:
            raise json.JSONDecodeError("nested too deeply", "", 0) from None


class ContractRoute(APIRoute):
    """A route whose endpoint reads its body through `ContractRequest` (FastAPI's custom-route hook)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def contract_handler(request: Request) -> Response:
            return await handler(ContractRequest(request.scope, request.receive))

        return contract_handler


async def invalid_request(request, exc: RequestValidationError) -> JSONResponse:
    """422 with where and what, without echoing the input: FastAPI's default handler copies the
    offending value into the answer, and a NaN or Infinity there cannot be rendered (a 500)."""
    detail = [{"loc": list(e.get("loc", ())), "msg": _message(e), "type": e.get("type", "")}
              for e in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


def events_model(settings: ServeParams) -> type[BaseModel]:
    """The body of POST /events, with the limits of `settings`: the columns of ingest's schema a client reports."""

    class Event(BaseModel):
        model_config = ConfigDict(extra="forbid")
        user_id: Id
        item_id: Id = Field(description="an item the served version does not know is kept (and counted)")
        timestamp: Integer | None = Field(None, description="seconds UTC; missing or null: when the service received it")
        event: Annotated[StrictStr, StringConstraints(max_length=ID_MAX_CHARS)] | None = Field(
            None, description="the event's kind (view, click, ...), kept where data.format has a column for it")

    class EventsRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        events: list[Event] = Field(min_length=1, max_length=settings.events_max_batch, description="oldest first")

    return EventsRequest


class EventsResponse(BaseModel):
    accepted: int = Field(description="events written to the log and fsynced before this answer")
    unknown_items: int = Field(description="accepted events whose item the served version does not know")
    policy_version: str


def broken_rules(problems: list[Problem], limit: int) -> JSONResponse:
    """422 naming each offending row and the rule it breaks, never its value; the first `limit`
    (validate.max_failed_examples) of them and how many more."""
    detail = [{"loc": ["body", "events", p.row, p.column], "msg": f"row {p.row}: {p.column} {p.rule}",
               "type": "value_error"} for p in problems[:limit]]
    if len(problems) > limit:
        detail.append({"loc": ["body", "events"], "msg": f"and {len(problems) - limit} more broken rule(s)",
                       "type": "value_error"})
    return JSONResponse({"detail": detail}, status_code=422)


async def overloaded(request, exc: Overloaded) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


def _message(error: dict) -> str:
    """The error's message; for malformed JSON with the parser's reason, a fixed phrase such as
    "Expecting ',' delimiter" (FastAPI's own message only says "JSON decode error")."""
    if error.get("type") == "json_invalid":
        return f"{error.get('msg', '')}: {error.get('ctx', {}).get('error', '')}"
    return error.get("msg", "")


def version_summary(manifest: dict) -> dict:
    """The served version and the verdict behind it: the gate, and every test figure and ratio to
    the accuracy-only policy with its paired interval (and the valid ratios it was chosen on); the
    exposure prices' settings and solves (null for a version deployed before them); and, for a version
    `recmoo reprice` made, the version it repriced and the service's batches it priced from (else null)."""
    return {"version": manifest["version"], "created_at": manifest["created_at"], "gate": manifest["gate"],
            "test": manifest["test"], "valid": manifest.get("valid"), "exposure": manifest.get("exposure"),
            "repriced": manifest.get("repriced")}


def policy_summary(manifest: dict) -> dict:
    return {
        "version": manifest["version"], "created_at": manifest["created_at"], "policy": manifest["policy"],
        "rule": manifest["rule"], "gate": manifest["gate"], "test": manifest["test"], "valid": manifest.get("valid"),
        "lineage": [{"artifact": link["name"], "stage": link["stage"], "sha256": link["sha256"]}
                    for link in reversed(manifest["lineage"])],
        "params_sha256": manifest["params_sha256"], "git": manifest["git"],
    }


class BodyLimit:
    """Answer 413 to bodies over `max_bytes` before anything parses them.

    A declared Content-Length is checked up front (the server enforces it). A body without one
    (chunked) is read here first, up to the limit, then replayed to the app.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.max_bytes:
                return await self._reject(scope, receive, send)
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                return await self.app(scope, _replay([message]), send)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await self._reject(scope, receive, send)
        body = b"".join(chunks)
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)

    async def _reject(self, scope, receive, send):
        response = JSONResponse({"detail": f"request body over {self.max_bytes} bytes"}, status_code=413)
        await response(scope, receive, send)


def _replay(messages: list[dict], then=None):
    """An ASGI receive that yields `messages`, then defers to `then` (disconnect notices)."""
    queue = list(messages)

    async def receive():
        if queue:
            return queue.pop(0)
        if then is None:
            return {"type": "http.disconnect"}
        return await then()

    return receive


# ------------------------------------------------------------------------------------ uvicorn entry

def app_from_env() -> FastAPI:
    """uvicorn factory for each worker process: params file and store from the environment."""
    import torch

    params = load_params(os.environ.get("RECMOO_PARAMS", "params.yaml"))
    torch.set_num_threads(params.serve.torch_threads)
    app = create_app(params.deploy.store, params.serve, params)
    # What is loaded by now (the imports' ~320k objects, the version) lives as long as the worker. A
    # full collection walks all of it with the GIL held: 160 ms on ML-100K, and wherever one fell in
    # a load of 64 session clients it set their p99 (150-180 ms; 31-34 ms frozen, bench_serve.py).
    # Frozen objects are left out of every collection; reference counting still frees them.
    gc.freeze()
    return app


def run(params_path: str, host: str, port: int, workers: int) -> None:
    """Start uvicorn; the workers rebuild the app from `params_path` (uvicorn spawns them). Every
    connection is under the deadlines and cap of serve_http.GuardedHttpToolsProtocol."""
    import functools

    import uvicorn

    from recmoo_dag import store
    from recmoo_dag.event_files import batch_format
    from recmoo_dag.serve_http import GuardedHttpToolsProtocol, raise_descriptor_limit

    params = load_params(params_path)
    cfg = params.serve
    folder = store.version_dir(params.deploy.store)  # fails with a message before the first deployment
    batch_format(params.data)  # so does a data.format no batch file of POST /events could match
    descriptors = raise_descriptor_limit(cfg.max_connections)  # the workers inherit it
    os.environ["RECMOO_PARAMS"] = str(Path(params_path).resolve())
    print(f"serve: {folder.name} from {params.deploy.store} on http://{host}:{port} (docs: /docs), "
          f"{workers} worker(s); per worker at most {cfg.max_connections} connections ({descriptors} descriptors), "
          f"{cfg.header_timeout_s} s for a request head, {cfg.body_timeout_s} s for a body")
    # A partial of a module-level class: it pickles into the spawned workers, arguments included.
    protocol = functools.partial(GuardedHttpToolsProtocol, header_timeout=cfg.header_timeout_s,
                                 body_timeout=cfg.body_timeout_s, max_head_bytes=cfg.max_head_bytes,
                                 max_connections=cfg.max_connections)
    # No limit_concurrency: it counts idle connections and would refuse /health (the protocol caps
    # instead). Keep-alive idling is bounded by the head deadline, armed at the same moment; uvicorn's
    # own keep-alive timer gets the same length so that it never cuts in first.
    uvicorn.run("recmoo_dag.serve:app_from_env", factory=True, host=host, port=port, workers=workers,
                loop="uvloop", http=protocol, timeout_keep_alive=cfg.header_timeout_s,
                access_log=False, log_level="warning")
