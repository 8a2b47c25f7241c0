"""`recmoo serve`: the HTTP service of the deployed policy (FastAPI + uvicorn, OpenAPI docs at /docs).

    POST /recommend  {"user_id"?, "recent_items"?, "k"?, "exclude"?}
                     -> {"items": [{"item_id", "title", "score"}], "policy_version", "source"}
    GET  /health     -> {"status": "ok", "policy_version"}
    GET  /policy     -> the served version: decision variables, rule, gate, test figures, lineage summary

The answer logic (and the fallbacks for unknown users and items) is recmoo_dag/recommender.py; this
module only validates requests and swaps versions. Invalid requests get a 4xx with a message:
422 for wrong types, k out of [1, serve.max_k], oversized lists, unknown fields or malformed JSON;
413 for bodies over serve.max_body_bytes. Ids may be JSON strings or integers (answers use strings).
"""
# No `from __future__ import annotations`: FastAPI reads the endpoint's body type at runtime, and
# that type is built per app (its limits come from params).
import os
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, StringConstraints

from recmoo_dag.config import ServeParams, load_params
from recmoo_dag.recommender import LiveRecommender

ID_MAX_CHARS = 128  # ids are short keys; longer strings are garbage, not lookups
Id = Annotated[StrictStr, StringConstraints(max_length=ID_MAX_CHARS)] | StrictInt


class Item(BaseModel):
    item_id: str
    title: str | None = Field(description="null when the catalog has no title")
    score: float = Field(description="the model's score for the item (logit; log popularity in the "
                                     "popularity fallback); the order is the policy's")


class RecommendResponse(BaseModel):
    items: list[Item]
    policy_version: str
    source: Literal["session", "user", "popularity"] = Field(
        description="session: scored from recent_items; user: a known user's precomputed candidates; "
                    "popularity: unknown user without usable recent items")


def request_model(settings: ServeParams) -> type[BaseModel]:
    """The body of POST /recommend, with the limits of `settings` (params.yaml: serve)."""

    class RecommendRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        user_id: Id | None = Field(None, description="a user of the training data; unknown ones fall back")
        recent_items: list[Id] = Field(default_factory=list, max_length=settings.max_recent_items,
                                       description="the live session, oldest first; unknown items are ignored")
        k: StrictInt = Field(settings.default_k, ge=1, le=settings.max_k, description="list length")
        exclude: list[Id] = Field(default_factory=list, max_length=settings.max_exclude,
                                  description="items never to return")

    return RecommendRequest


def create_app(store_dir: str | Path, settings: ServeParams) -> FastAPI:
    live = LiveRecommender(store_dir, settings.reload_check_ms, settings.session_window)
    RecommendRequest = request_model(settings)
    app = FastAPI(title="recmoo_dag", summary="Re-ranked recommendations of the deployed Pareto policy.")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.state.live = live

    @app.post("/recommend", response_model=RecommendResponse)
    async def recommend(body: RecommendRequest) -> RecommendResponse:  # type: ignore[valid-type]
        # Inline, not in a thread pool: the work is ~1 ms of numpy/torch and a worker per core.
        answer = live.get().recommend(
            None if body.user_id is None else str(body.user_id), [str(i) for i in body.recent_items],
            body.k, [str(i) for i in body.exclude])
        return RecommendResponse(items=answer.items, policy_version=answer.version, source=answer.source)

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


async def invalid_request(request, exc: RequestValidationError) -> JSONResponse:
    """422 with where and what, without echoing the input: FastAPI's default handler copies the
    offending value into the answer, and a NaN or Infinity there cannot be rendered (a 500)."""
    detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
              for e in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


def version_summary(manifest: dict) -> dict:
    """The served version and the verdict behind it: the gate, and every test figure and ratio to
    the accuracy-only policy with its paired interval (and the valid ratios it was chosen on)."""
    return {"version": manifest["version"], "created_at": manifest["created_at"], "gate": manifest["gate"],
            "test": manifest["test"], "valid": manifest.get("valid")}


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
    return create_app(params.deploy.store, params.serve)


def run(params_path: str, host: str, port: int, workers: int) -> None:
    """Start uvicorn; the workers rebuild the app from `params_path` (uvicorn spawns them)."""
    import uvicorn

    from recmoo_dag import store

    params = load_params(params_path)
    folder = store.version_dir(params.deploy.store)  # fails with a message before the first deployment
    os.environ["RECMOO_PARAMS"] = str(Path(params_path).resolve())
    print(f"serve: {folder.name} from {params.deploy.store} on http://{host}:{port} (docs: /docs), "
          f"{workers} worker(s)")
    uvicorn.run("recmoo_dag.serve:app_from_env", factory=True, host=host, port=port, workers=workers,
                loop="uvloop", http="httptools", access_log=False, log_level="warning")
