"""Fuzzing POST /recommend with a fixed budget: any body gets a 2xx or a 4xx with a message, never a 5xx.

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
    """One deployed tiny project for the whole module (the fuzzer never changes it)."""
    import os

    root = tmp_path_factory.mktemp("fuzz")
    before = os.getcwd()
    os.chdir(root)
    try:
        params = deployed_copy(base_project(tmp_path_factory), root, [FRONT[1]], {"deploy": {"min_ratio": NO_BOUNDS}})
        bundle = read_bundle(store.version_dir(params.deploy.store))
        with TestClient(create_app(root / params.deploy.store, params.serve)) as client:
            yield client, [str(u) for u in bundle.user_ids], [str(i) for i in bundle.item_ids[1:]]
    finally:
        os.chdir(before)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=30)
FIELDS = st.sampled_from(["user_id", "recent_items", "k", "exclude"])


def assert_no_server_error(response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["detail"]  # a message, not an empty error page


def send(client, body) -> object:
    raw = json.dumps(body, allow_nan=True)  # NaN / Infinity tokens: Python's JSON extension, on purpose
    return client.post("/recommend", content=raw, headers={"content-type": "application/json"})


@BUDGET
@given(body=json_values)
def test_any_json_value_is_answered_without_5xx(app_and_ids, body):
    assert_no_server_error(send(app_and_ids[0], body))


@BUDGET
@given(body=st.dictionaries(FIELDS | st.text(max_size=8), json_values, max_size=5))
def test_request_shaped_bodies_with_any_values_are_answered_without_5xx(app_and_ids, body):
    assert_no_server_error(send(app_and_ids[0], body))


@BUDGET
@given(raw=st.binary(max_size=300))
def test_raw_bytes_are_answered_without_5xx(app_and_ids, raw):
    response = app_and_ids[0].post("/recommend", content=raw, headers={"content-type": "application/json"})
    assert_no_server_error(response)


@BUDGET
@given(data=st.data())
def test_well_formed_requests_keep_the_contract(app_and_ids, data):
    client, users, items = app_and_ids
    some_id = st.sampled_from(items) | st.text(max_size=10) | st.integers(-5, 10**6)
    body = data.draw(st.fixed_dictionaries({}, optional={
        "user_id": st.sampled_from(users) | st.text(max_size=10) | st.integers(-5, 10**6) | st.none(),
        "recent_items": st.lists(some_id, max_size=30),
        "k": st.integers(1, 100),
        "exclude": st.lists(some_id, max_size=30),
    }))
    response = send(client, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    ids = [item["item_id"] for item in answer["items"]]
    assert len(ids) == len(set(ids)) <= body.get("k", 10)
    assert all(isinstance(i, str) for i in ids) and all(math.isfinite(item["score"]) for item in answer["items"])
    assert not {str(i) for i in body.get("exclude", [])} & set(ids)
    assert not {str(i) for i in body.get("recent_items", [])} & set(ids)
    assert answer["policy_version"] == "v0001"
