"""The service: answers, fallbacks, bad requests, hot swap of versions, the CLI, and a real socket."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from fastapi.testclient import TestClient

from recmoo_dag import store
from recmoo_dag.bundle import read_bundle
from recmoo_dag.cli import main
from recmoo_dag.policy import VARIABLE_NAMES
from recmoo_dag.serve import create_app
from recmoo_dag.stages import deploy
from tests.deploy_support import FRONT, base_project, deployed_copy, perturb_model, write_front
from tests.serve_support import HOST, running_service


@pytest.fixture
def served(tmp_path, tmp_path_factory, monkeypatch):
    """A tiny project whose deployed policy is the strongly diversified FRONT[2]."""
    monkeypatch.chdir(tmp_path)
    return deployed_copy(base_project(tmp_path_factory), tmp_path, [FRONT[2]])


@pytest.fixture
def client(served):
    """The service as params.yaml has it: with a forward process, which takes the batches while the
    worker's event loop has other work (recmoo_dag/batcher.py)."""
    assert served.serve.forward_process
    with TestClient(create_app(served.deploy.store, served.serve)) as test_client:
        yield test_client


@pytest.fixture
def contract_client(served):
    """The service without a forward process: what the HTTP contract checks does not depend on where
    batches run, and a forward process would take each test ~3 s to load."""
    settings = served.serve.model_copy(update={"forward_process": False})
    with TestClient(create_app(served.deploy.store, settings)) as test_client:
        yield test_client


def post(client, **body):
    return client.post("/recommend", json=body)


def test_known_user_gets_k_policy_ranked_unseen_items(client, served):
    bundle = read_bundle(store.version_dir(served.deploy.store))
    user = str(bundle.user_ids[3])
    answer = post(client, user_id=user, k=7).json()
    assert answer["policy_version"] == "v0001" and answer["source"] == "user"
    ids = [item["item_id"] for item in answer["items"]]
    assert len(ids) == len(set(ids)) == 7 and all(isinstance(i, str) for i in ids)
    seen = set(bundle.item_ids[bundle.history[bundle.indptr[3]:bundle.indptr[4]]])
    assert not seen & set(ids)
    assert all(item["title"].startswith("Item ") for item in answer["items"])
    assert post(client, user_id=int(user), k=7).json() == answer  # integer ids are the same ids


def test_recent_items_drive_the_model_at_once(client, served):
    bundle = read_bundle(store.version_dir(served.deploy.store))
    user, history = str(bundle.user_ids[5]), bundle.history[bundle.indptr[5]:bundle.indptr[6]]
    unseen = [str(i) for i in bundle.item_ids[1:] if i not in set(bundle.item_ids[history])]
    recent = unseen[:3]
    answer = post(client, user_id=user, recent_items=recent, k=10).json()
    assert answer["source"] == "session"
    assert not set(recent) & {item["item_id"] for item in answer["items"]}
    # A known user's session is their sequence plus the recent items: an anonymous session with
    # that whole sequence gets the same model scores (the dither, drawn from the user id, differs).
    whole = [str(i) for i in bundle.item_ids[history]] + recent
    anonymous = post(client, recent_items=whole, k=bundle.cand_items.shape[1]).json()
    scores = {item["item_id"]: item["score"] for item in anonymous["items"]}
    assert all(scores[item["item_id"]] == item["score"] for item in answer["items"])
    assert answer != post(client, user_id=user, k=10).json()


def test_unknown_users_and_items_fall_back_without_errors(contract_client, served):
    popular = post(contract_client, user_id="no-such-user", k=5).json()
    assert popular["source"] == "popularity" and len(popular["items"]) == 5
    assert post(contract_client, k=5).json() == popular  # anonymous: the same fallback
    assert post(contract_client, user_id="no-such-user", recent_items=["nope", 10**30], k=5).json() == popular
    excluded = popular["items"][0]["item_id"]
    answer = post(contract_client, user_id="no-such-user", exclude=[excluded, "nope"], k=5).json()
    assert excluded not in {item["item_id"] for item in answer["items"]} and len(answer["items"]) == 5


def test_exclude_and_k_larger_than_the_candidates(contract_client, served):
    bundle = read_bundle(store.version_dir(served.deploy.store))
    user = str(bundle.user_ids[0])
    first = post(contract_client, user_id=user, k=5).json()["items"]
    dropped = [item["item_id"] for item in first[:2]]
    again = post(contract_client, user_id=user, k=5, exclude=dropped).json()["items"]
    assert not set(dropped) & {item["item_id"] for item in again}
    available = int((bundle.cand_items[0] != 0).sum())
    assert len(post(contract_client, user_id=user, k=100).json()["items"]) == min(100, available)


def test_excluded_items_are_replaced_while_items_remain(client, served):
    """Exclusions never shorten a list while the catalog holds other items: on every path."""
    bundle = read_bundle(store.version_dir(served.deploy.store))
    catalog = [str(i) for i in bundle.item_ids[1:]]
    n_candidates = bundle.cand_items.shape[1]
    order = np.lexsort((np.arange(len(bundle.train_counts)), -bundle.train_counts))
    popular = [str(bundle.item_ids[i]) for i in order if i]
    # Anonymous: the N most popular items excluded, the less popular ones fill the list.
    answer = post(client, exclude=popular[:n_candidates], k=5).json()
    assert answer["source"] == "popularity"
    assert set(ids(answer)) <= set(popular[n_candidates:])
    assert len(answer["items"]) == min(5, len(popular) - n_candidates)
    assert len(ids(post(client, exclude=catalog[3:], k=5).json())) == 3  # exactly what remains
    # A known user with a full row of candidates (more unseen items beyond them), all of them excluded.
    seen = [set(bundle.history[bundle.indptr[u]:bundle.indptr[u + 1]]) for u in range(len(bundle.user_ids))]
    u = min(range(len(seen)), key=lambda user: len(seen[user]))
    assert (bundle.cand_items[u] != 0).all()
    excluded = [str(bundle.item_ids[i]) for i in bundle.cand_items[u]]
    left = {str(bundle.item_ids[i]) for i in range(1, len(bundle.item_ids)) if i not in seen[u]}
    left -= set(excluded)
    answer = post(client, user_id=str(bundle.user_ids[u]), exclude=excluded, k=5).json()
    assert answer["source"] == "user" and set(ids(answer)) <= left
    assert len(ids(answer)) == min(5, len(left)) > 0
    # A session: everything but the recent item and three others excluded.
    answer = post(client, recent_items=catalog[:1], exclude=catalog[4:], k=5).json()
    assert answer["source"] == "session" and sorted(ids(answer)) == sorted(catalog[1:4])


def ids(answer: dict) -> list[str]:
    return [item["item_id"] for item in answer["items"]]


BAD_REQUESTS = [
    ({"user_id": "1", "k": 0}, 422, "greater than or equal to 1"),
    ({"user_id": "1", "k": 101}, 422, "less than or equal to 100"),
    ({"user_id": "1", "k": "10"}, 422, "valid integer"),
    ({"user_id": "1", "k": True}, 422, "valid integer"),
    ({"user_id": "1", "k": 2.5}, 422, "valid integer"),
    ({"user_id": "1", "k": 85.5}, 422, "valid integer"),
    ({"user_id": "1", "k": 1e300}, 422, "less than or equal to 100"),  # an integer, as JSON Schema says
    ({"user_id": 1.5}, 422, "user_id"),
    ({"user_id": ["1"]}, 422, "user_id"),
    ({"user_id": "x" * 129}, 422, "at most 128 characters"),
    ({"recent_items": "1,2,3"}, 422, "valid list"),
    ({"recent_items": [{"id": 1}]}, 422, "recent_items"),
    ({"recent_items": ["1"] * 201}, 422, "at most 200 items"),
    ({"exclude": [None]}, 422, "exclude"),
    ({"user": "1"}, 422, "Extra inputs are not permitted"),
    ([1, 2], 422, "valid dictionary"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_REQUESTS)
def test_invalid_requests_get_a_4xx_with_a_message(contract_client, body, status, message):
    response = contract_client.post("/recommend", json=body)
    assert response.status_code == status
    assert message in json.dumps(response.json()["detail"])


# Raw bodies the JSON parser refuses, and the reason each 422 gives (a fixed phrase, never the input).
MALFORMED = [
    (b'{"user_id": "1",', "Expecting property name"),
    (b"", "Field required"),
    (b'{"user_id": "\xff"}', "not UTF-8"),  # invalid UTF-8 inside a string value
    (b"\xff\xfe", "not UTF-8"),
    ('{"k": 3}'.encode("utf-16"), "not UTF-8"),  # JSON on the wire is UTF-8 (RFC 8259, section 8.1)
    (b'{"user_id": "\\ud800"}', "valid string"),  # an escaped lone surrogate is no Unicode string
    (b'{"k": ' + b"9" * 5000 + b"}", "digits"),  # past Python's int-digit limit
    (b'{"exclude": [-' + b"7" * 4301 + b"]}", "digits"),
    (b"[" * 60000, "nested too deeply"),  # under serve.max_body_bytes, past the parser's recursion limit
    (b'{"recent_items": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
    (b'{"k": NaN}', "valid integer"),
    (b'{"k": Infinity}', "valid integer"),
    (b'{"k": 1e999999}', "valid integer"),  # a huge exponent is an infinite float
]


def test_malformed_bodies_get_422_with_a_reason_and_no_echo(contract_client):
    for raw, message in MALFORMED:
        response = contract_client.post("/recommend", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 422, (raw[:20], response.text[:200])
        assert message in json.dumps(response.json()["detail"]) and len(response.content) < 400, raw[:20]


def test_bodies_not_sent_as_json_and_oversized_bodies(contract_client, served):
    for headers in ({"content-type": "text/plain"}, {}):
        response = contract_client.post("/recommend", content=b'{"k": 3}', headers=headers)
        assert response.status_code == 422 and "valid dictionary" in response.text
    assert contract_client.post("/recommend", content=b'\xef\xbb\xbf{"k": 3}',  # a UTF-8 byte order mark is ignored
                       headers={"content-type": "application/json"}).status_code == 200
    huge = json.dumps({"exclude": ["x" * 100] * 1000}).encode()  # > serve.max_body_bytes (64 KiB)
    response = contract_client.post("/recommend", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "over 65536 bytes" in response.json()["detail"]

    def chunks():  # no content-length: counted as it streams
        for _ in range(100):
            yield b" " * 1024

    response = contract_client.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_health_policy_and_openapi(contract_client, served):
    assert contract_client.get("/health").json() == {"status": "ok", "policy_version": "v0001"}
    policy = contract_client.get("/policy").json()
    assert policy["version"] == "v0001" and policy["policy"] == {k: FRONT[2][k] for k in VARIABLE_NAMES}
    assert policy["lineage"][0]["artifact"] == "front"
    assert policy["gate"]["promoted"] is True and set(policy["test"]) == {"accuracy_only", "deployed", "ratio"}
    version = contract_client.get("/version").json()
    assert version["version"] == "v0001" and version["test"] == policy["test"] and version["valid"] == policy["valid"]
    assert version["repriced"] is None  # deployed by the pipeline, not by `recmoo reprice`
    low, high = version["test"]["ratio"]["ndcg@10_ci"]  # the served policy over accuracy-only, paired
    assert low <= version["test"]["ratio"]["ndcg@10"] <= high
    assert set(version["valid"]["ratio"]) >= {"coverage@10", "coverage@10_ci"}
    spec = contract_client.get("/openapi.json").json()
    assert {"/recommend", "/health", "/policy", "/version"} <= set(spec["paths"])
    assert set(spec["paths"]["/recommend"]["post"]["responses"]) == {"200", "413", "422", "503"}  # the contract


def test_docs_load_everything_from_the_service(contract_client):
    """No CDN: each docs page and every script, style sheet and icon it names come from the service itself."""
    for page in ("/docs", "/redoc"):
        response = contract_client.get(page)
        assert response.status_code == 200 and "://" not in response.text, page
        found = re.findall(r"""(?:src|href|spec-url)="([^"]+)"|url: '([^']+)'""", response.text)
        urls = {url for groups in found for url in groups if url}
        assert "/openapi.json" in urls and len(urls) > 2, (page, urls)
        for url in urls:
            assert url.startswith("/") and not url.startswith("//"), (page, url)
            assert contract_client.get(url).status_code == 200, (page, url)


# Bodies on either side of the published schema's edges: the service accepts exactly what it says.
SCHEMA_CASES = [{"k": 85.0}, {"k": 1e1}, {"k": 85.5}, {"k": 101.0}, {"k": "10"}, {"k": True}, {"k": None},
                {"user_id": 7.0}, {"user_id": 7.5}, {"user_id": "x" * 128}, {"user_id": "x" * 129},
                {"recent_items": [1.0, "2"]}, {"exclude": [None]}, {"exclude": ["1"] * 1001}, {"other": 1}]


def test_the_published_schema_accepts_exactly_what_the_service_does(contract_client):
    schema = contract_client.get("/openapi.json").json()["components"]["schemas"]["RecommendRequest"]
    validator = jsonschema.Draft202012Validator(schema)  # OpenAPI 3.1 schemas are JSON Schema 2020-12
    for body in SCHEMA_CASES:
        status = post(contract_client, **body).status_code
        assert status == (200 if validator.is_valid(body) else 422), (body, status)
    assert post(contract_client, user_id="1", k=7.0).json() == post(contract_client, user_id="1", k=7).json()
    assert post(contract_client, user_id=1.0, k=3).json() == post(contract_client, user_id="1", k=3).json()


def test_a_promotion_and_a_rollback_are_picked_up_without_failed_requests(client, served):
    statuses, versions, stop = [], [], threading.Event()

    def hammer():
        while not stop.is_set():
            response = post(client, user_id="1", recent_items=["2"], k=10)
            statuses.append(response.status_code)
            versions.append(response.json().get("policy_version"))

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        perturb_model(served, seed=21)
        write_front(served, [FRONT[1]])
        deploy.main(served)
        assert store.current_version(served.deploy.store) == "v0002"
        wait_for(lambda: versions and versions[-1] == "v0002")
        store.rollback(served.deploy.store)
        wait_for(lambda: versions[-1] == "v0001")
    finally:
        stop.set()
        worker.join()
    assert set(statuses) == {200} and {"v0001", "v0002"} == set(versions)
    # Versions change at most twice: v0001 -> v0002 -> v0001, never back and forth (no mixed state).
    changes = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
    assert changes == ["v0001", "v0002", "v0001"]


def test_a_broken_version_is_refused_and_the_old_one_keeps_serving(client, served, capsys):
    root = Path(served.deploy.store)
    broken = root / store.VERSIONS / "v0002"
    broken.mkdir()
    (broken / store.MANIFEST).write_text("{}")  # complete-looking, but no model, catalog or candidates
    store.switch(root, "v0002")
    for _ in range(20):
        response = post(client, user_id="1", k=3)
        assert response.status_code == 200 and response.json()["policy_version"] == "v0001"
        time.sleep(0.02)
    assert "serve: cannot load versions/v0002" in capsys.readouterr().err
    assert client.get("/health").json()["policy_version"] == "v0001"


def test_a_store_whose_pointer_goes_away_keeps_serving_what_is_loaded(contract_client, served, capsys):
    """The store moved or its CURRENT was removed under a running service: it answers from the version
    it holds, says why in its log, and picks up a pointer that comes back."""
    root = Path(served.deploy.store)
    (root / store.CURRENT).unlink()
    for _ in range(5):
        response = post(contract_client, user_id="1", k=3)
        assert response.status_code == 200 and response.json()["policy_version"] == "v0001"
        time.sleep(0.02)
    assert f"serve: cannot read {root / store.CURRENT}" in capsys.readouterr().err
    store.switch(root, "v0001")
    assert post(contract_client, user_id="1", k=3).json()["policy_version"] == "v0001"
    assert "cannot read" not in capsys.readouterr().err


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_cli_recommend_prints_what_the_service_answers(client, served, capsys):
    assert main(["recommend", "--user", "1", "--recent", "2,3", "-k", "4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == post(client, user_id="1", recent_items=["2", "3"], k=4).json()
    assert main(["recommend", "--user", "1", "-k", "0"]) == 2
    assert "-k must be in [1, 100]" in capsys.readouterr().err


@pytest.mark.slow
def test_recmoo_serve_answers_on_a_real_socket(served, tmp_path):
    import httpx

    with running_service(Path.cwd(), 2, os.getcwd() + os.pathsep + _repo(), tmp_path / "serve.log") as (_, port):
        url = f"http://{HOST}:{port}"
        answer = httpx.post(f"{url}/recommend", json={"user_id": "1", "k": 10}).json()
        assert answer["policy_version"] == "v0001" and len(answer["items"]) == 10
        assert httpx.post(f"{url}/recommend", content=b"{", headers={"content-type": "application/json"}
                          ).status_code == 422


def _repo() -> str:
    from tests.conftest import REPO

    return str(REPO)


def test_a_worker_leaves_what_it_loaded_out_of_garbage_collection(served):
    """The worker factory freezes the objects it loaded, so no full collection walks them mid-load."""
    probe = ("import gc, os, sys; from recmoo_dag.serve import app_from_env; "
             "assert gc.get_freeze_count() == 0; app_from_env(); "
             "assert gc.get_freeze_count() > 100_000, gc.get_freeze_count(); "
             "sys.exit(0 if len(gc.get_objects()) < gc.get_freeze_count() // 10 else 1)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": _repo(), "RECMOO_PARAMS": str(Path("params.yaml").resolve())})
    assert done.returncode == 0, done.stderr[-2000:]

