"""Fuzzing POST /recommend with a fixed budget: any body under serve.max_body_bytes gets 200 or a 422
with a message, as recmoo_dag/serve.py's contract says (never a 400 or a 5xx).

Three generators: arbitrary JSON values (wrong types, huge ints, NaN, nesting, unicode), bodies
shaped like requests with arbitrary field values, and raw bytes. Well-formed requests must also
satisfy the contract: k items at most, none excluded, none from the session, ids as strings.
"""
from __future__ import annotations

import json
import math

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recmoo_dag import store
from recmoo_dag.bundle import read_bundle
from recmoo_dag.serve import create_app
from tests.deploy_support import FRONT, NO_BOUNDS, base_project, deployed_copy

BUDGET = settings(max_examples=150, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def app_and_ids(tmp_path_factory):
    """One deployed tiny project for the whole module (the fuzzer never changes it): the client, each
    user's seen item ids, the catalog's item ids and the number of candidates N."""
    import os

    root = tmp_path_factory.mktemp("fuzz")
    before = os.getcwd()
    os.chdir(root)
    try:
        params = deployed_copy(base_project(tmp_path_factory), root, [FRONT[1]], {"deploy": {"min_ratio": NO_BOUNDS}})
        bundle = read_bundle(store.version_dir(params.deploy.store))
        history = [bundle.history[bundle.indptr[u]:bundle.indptr[u + 1]] for u in range(len(bundle.user_ids))]
        seen = {str(user): {str(i) for i in bundle.item_ids[items]}
                for user, items in zip(bundle.user_ids, history)}
        with TestClient(create_app(root / params.deploy.store, params.serve)) as client:
            yield client, seen, [str(i) for i in bundle.item_ids[1:]], bundle.cand_items.shape[1]
    finally:
        os.chdir(before)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=30)
FIELDS = st.sampled_from(["user_id", "recent_items", "k", "exclude"])


def assert_contract_status(response) -> None:
    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        assert response.json()["detail"]  # a message, not an empty error page


def send(client, body) -> object:
    raw = json.dumps(body, allow_nan=True)  # NaN / Infinity tokens: Python's JSON extension, on purpose
    return client.post("/recommend", content=raw, headers={"content-type": "application/json"})


@BUDGET
@given(body=json_values)
def test_any_json_value_gets_200_or_422(app_and_ids, body):
    assert_contract_status(send(app_and_ids[0], body))


@BUDGET
@given(body=st.dictionaries(FIELDS | st.text(max_size=8), json_values, max_size=5))
def test_request_shaped_bodies_with_any_values_get_200_or_422(app_and_ids, body):
    assert_contract_status(send(app_and_ids[0], body))


@BUDGET
@given(raw=st.binary(max_size=300))
def test_raw_bytes_get_200_or_422(app_and_ids, raw):
    response = app_and_ids[0].post("/recommend", content=raw, headers={"content-type": "application/json"})
    assert_contract_status(response)


@BUDGET
@given(data=st.data())
def test_well_formed_requests_keep_the_contract(app_and_ids, data):
    client, seen, items, n_candidates = app_and_ids
    some_id = st.sampled_from(items) | st.text(max_size=10) | st.integers(-5, 10**6)
    body = data.draw(st.fixed_dictionaries({}, optional={
        "user_id": st.sampled_from(sorted(seen)) | st.text(max_size=10) | st.integers(-5, 10**6) | st.none(),
        "recent_items": st.lists(some_id, max_size=30),
        "k": st.integers(1, 100) | st.integers(1, 100).map(float),  # 85.0 is an integer, as JSON Schema says
        "exclude": st.lists(some_id, max_size=30),
    }))
    response = send(client, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    ids = [item["item_id"] for item in answer["items"]]
    unavailable = {str(i) for i in body.get("exclude", []) + body.get("recent_items", [])}
    unavailable |= seen.get(str(body.get("user_id")), set())
    # Filled to k (at most the N candidates) while the catalog holds items neither seen, recent nor excluded.
    left = len(set(items) - unavailable)
    assert len(ids) == len(set(ids)) == min(int(body.get("k", 10)), n_candidates, left)
    assert all(isinstance(i, str) for i in ids) and all(math.isfinite(item["score"]) for item in answer["items"])
    assert not unavailable & set(ids)
    assert answer["policy_version"] == "v0001"
