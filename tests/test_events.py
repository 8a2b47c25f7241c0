"""POST /events: the rules, the durable log and its batch files, the sessions it feeds, and a kill -9."""
from __future__ import annotations

import copy
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from recmoo_dag import store
from recmoo_dag.bundle import read_bundle
from recmoo_dag.config import Params
from recmoo_dag.data import find_log_files, read_interactions
from recmoo_dag.defs.sensors import Cursor, scan
from recmoo_dag.event_files import Event, batch_format
from recmoo_dag.events import EventLog, Intake, SessionStore, read_segment, recover, trained_batches
from recmoo_dag.serve import create_app
from tests.conftest import REPO, deep_update, section
from tests.deploy_support import FRONT, LOOSE, base_project, copy_project, deployed_copy
from tests.serve_support import HOST, free_port, start_service, stop_service, wait_healthy

NOW = 1_765_000_000  # 2025-12-06, inside validate's [min_timestamp, max_timestamp]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> Path:
    """A tiny project with a deployed version, built once; each test works on a copy."""
    dest = tmp_path_factory.mktemp("events_deployed")
    before = os.getcwd()
    os.chdir(dest)
    try:
        deployed_copy(base_project(tmp_path_factory), dest, [FRONT[2]])
    finally:
        os.chdir(before)
    return dest


@pytest.fixture
def served(deployed, tmp_path, monkeypatch):
    """A copy of the deployed project as the working directory; call it with serve overrides."""
    monkeypatch.chdir(tmp_path)

    def make(**serve) -> Params:
        return copy_project(deployed, tmp_path, deep_update(copy.deepcopy(LOOSE), {"serve": serve}))

    return make


def client_of(params: Params) -> TestClient:
    return TestClient(create_app(params.deploy.store, params.serve, params))


def post(client, rows: list[dict]):
    return client.post("/events", json={"events": rows})


def segments(params: Params) -> list[Path]:
    return sorted(Path(params.serve.events_log_dir).glob("*.jsonl"))


def batches(params: Params) -> list[Path]:
    incoming = Path(params.data.incoming_dir)
    return find_log_files(incoming, params.data.format, params.data.generic)[0] if incoming.is_dir() else []


def logged(params: Params) -> list[tuple[str, str, int]]:
    """Every event on disk: rolled into batch files (read as ingest reads them), then still in segments."""
    rows = []
    for path in batches(params):
        frame = read_interactions(path, params.data.format, params.data.generic)
        rows += list(zip(frame["user_id"], frame["item_id"], frame["timestamp"].tolist()))
    for path in segments(params):
        rows += [(e.user_id, e.item_id, e.timestamp) for e in read_segment(path)]
    return rows


def catalog(params: Params) -> tuple[list[str], list[str]]:
    bundle = read_bundle(store.version_dir(params.deploy.store))
    return [str(u) for u in bundle.user_ids], [str(i) for i in bundle.item_ids[1:]]


def test_an_acknowledged_batch_is_on_disk_and_unknown_items_are_counted(served):
    params = served()
    users, items = catalog(params)
    rows = [{"user_id": users[0], "item_id": items[0], "timestamp": NOW, "event": "click"},
            {"user_id": int(users[1]), "item_id": items[1]},  # no time: the service stamps it
            {"user_id": users[1], "item_id": "never-seen", "timestamp": NOW + 1}]
    with client_of(params) as client:
        before = int(time.time())
        answer = post(client, rows)
        after = int(time.time())
        assert answer.status_code == 200
        assert answer.json() == {"accepted": 3, "unknown_items": 1, "policy_version": "v0001"}
        # On disk when the answer came: in this worker's segment, not yet a batch the sensor could see.
        [segment] = segments(params)
        on_disk = read_segment(segment)
        assert [(e.user_id, e.item_id, e.event) for e in on_disk] == [
            (users[0], items[0], "click"), (users[1], items[1], None), (users[1], "never-seen", None)]
        assert on_disk[0].timestamp == NOW and before <= on_disk[1].timestamp <= after
        assert batches(params) == []
    # The worker's shutdown rolls its segment into a batch that ingest reads back.
    assert segments(params) == [] and [row[:2] for row in logged(params)] == [(e.user_id, e.item_id) for e in on_disk]


def test_a_broken_rule_gets_422_naming_row_and_rule_and_writes_nothing(served):
    params = served()
    users, items = catalog(params)
    good = {"user_id": users[0], "item_id": items[0], "timestamp": NOW}
    with client_of(params) as client:
        answer = post(client, [good, {**good, "user_id": "  "}, good, {**good, "timestamp": NOW * 1000}])
        assert answer.status_code == 422
        detail = answer.json()["detail"]
        assert [d["loc"] for d in detail] == [["body", "events", 1, "user_id"], ["body", "events", 3, "timestamp"]]
        assert "row 1: user_id must not be empty or whitespace-only" == detail[0]["msg"]
        assert detail[1]["msg"].startswith("row 3: timestamp must lie in [631152000, 2524608000] seconds UTC")
        assert str(NOW * 1000) not in answer.text  # never the value
        # The request schema's rules name the row too; a batch is 1 to serve.events_max_batch rows.
        typed = post(client, [good, {**good, "item_id": ["x"]}, {**good, "rating": 5}])
        assert typed.status_code == 422
        assert {tuple(d["loc"][:3]) for d in typed.json()["detail"]} == {("body", "events", 1), ("body", "events", 2)}
        assert post(client, []).status_code == 422
        assert post(client, [{"user_id": 1, "item_id": 1}] * (params.serve.events_max_batch + 1)).status_code == 422
        assert post(client, [{**good, "user_id": ""}] * 8).json()["detail"][-1]["msg"] == "and 3 more broken rule(s)"
        # Nothing of a refused batch was written, nor remembered: the user is still answered from candidates.
        assert segments(params) == [] and batches(params) == []
        assert client.post("/recommend", json={"user_id": users[0]}).json()["source"] == "user"


def test_a_roll_by_count_gives_a_batch_ingest_reads_back_and_the_sensor_sees_only_whole_files(served, monkeypatch):
    params = served(events_roll_count=5)
    rows = [{"user_id": f"u{n % 3}", "item_id": f"tab\there, \"quoted\" {n}", "timestamp": NOW + n} for n in range(7)]
    with client_of(params) as client:
        for start in (0, 2, 4, 6):
            assert post(client, rows[start:start + 2]).json()["accepted"] == len(rows[start:start + 2])
        [batch] = batches(params)  # 6 events reached the count of 5 with the third request
        assert batch.name.startswith("events-") and batch.suffix == ".inter"
        frame = read_interactions(batch, params.data.format, params.data.generic)
        assert list(zip(frame["user_id"], frame["item_id"], frame["timestamp"])) == [
            (r["user_id"], r["item_id"], r["timestamp"]) for r in rows[:6]]
        assert frame["rating"].isna().all()
        assert [e.item_id for e in read_segment(segments(params)[0])] == [rows[6]["item_id"]]
        # A roll that fails before its rename leaves a `.part` the sensor ignores, and the segment.
        with monkeypatch.context() as patched:
            patched.setattr(os, "replace", _fail)
            assert post(client, rows[:5]).status_code == 200  # acknowledged: the failed roll does not fail it
        [part] = Path(params.data.incoming_dir).glob("*.part")
        first = scan(Path.cwd(), Cursor())
        second = scan(Path.cwd(), first.cursor)  # a file counts once its size held for two ticks
        assert list(second.batch) == [batch.as_posix()]  # the whole batch only (paths relative to the project)
        assert part.as_posix() in first.ignored + second.ignored
    # Rolled at the shutdown, nothing is lost or doubled: 6 + 1 + 5 events, each once, and no `.part` is left.
    assert sorted(r[1] for r in logged(params)) == sorted(r["item_id"] for r in rows[:6] + rows[6:] + rows[:5])
    assert not list(Path(params.data.incoming_dir).glob("*.part"))


def _fail(*args):
    raise OSError(28, "No space left on device")


def test_a_log_that_cannot_be_written_answers_503_and_keeps_nothing(served, monkeypatch, capsys):
    params = served()
    with client_of(params) as client:
        for first_or_later in ("opening the segment", "appending to it"):
            with monkeypatch.context() as patched:
                patched.setattr(os, "fsync", _fail)
                refused = post(client, [{"user_id": "a", "item_id": first_or_later, "timestamp": NOW}])
            assert refused.status_code == 503, first_or_later
            assert refused.json() == {"detail": "events not recorded: the event log cannot be written"}
            assert "No space left on device" in capsys.readouterr().err  # the reason, in the service's log only
            assert post(client, [{"user_id": "a", "item_id": "kept", "timestamp": NOW}]).status_code == 200
    assert logged(params) == [("a", "kept", NOW)] * 2  # nothing of the refused requests


def test_a_segment_rolls_by_age_without_new_events(served):
    params = served(events_roll_seconds=0.2)
    with client_of(params) as client:
        post(client, [{"user_id": "a", "item_id": "b", "timestamp": NOW}])
        deadline = time.monotonic() + 10
        while not batches(params) or segments(params):  # the batch is renamed into place, then the segment removed
            assert time.monotonic() < deadline, "no roll by age"
            time.sleep(0.05)
        assert logged(params) == [("a", "b", NOW)]


def same_answer(got: dict, want: dict) -> None:
    """The same list from the same version; scores equal up to float rounding, which differs with
    whether the user's encoded history was cached where the request ran."""
    assert {**got, "items": [item["item_id"] for item in got["items"]]} == \
        {**want, "items": [item["item_id"] for item in want["items"]]}
    assert [item["score"] for item in got["items"]] == pytest.approx([item["score"] for item in want["items"]], rel=1e-5)


def test_posted_events_answer_the_next_request_as_a_session_and_survive_a_restart(served):
    params = served(events_roll_count=3)
    users, items = catalog(params)
    user, clicked = users[2], items[5:9]
    with TestClient(create_app(params.deploy.store, params.serve)) as plain:  # takes no events
        expected = plain.post("/recommend", json={"user_id": user, "recent_items": clicked}).json()
        with_recent = plain.post("/recommend", json={"user_id": user, "recent_items": clicked + items[:1]}).json()
        untouched = plain.post("/recommend", json={"user_id": users[3]}).json()
    assert expected["source"] == "session"
    with client_of(params) as client:
        for part in (clicked[:3], clicked[3:]):  # the first three roll into a batch, the fourth waits in the log
            assert post(client, [{"user_id": user, "item_id": item} for item in part]).status_code == 200
        assert len(batches(params)) == 1 and len(segments(params)) == 1
        same_answer(client.post("/recommend", json={"user_id": user}).json(), expected)  # no recent_items sent
        # recent_items are still taken, after the service's events
        same_answer(client.post("/recommend", json={"user_id": user, "recent_items": items[:1]}).json(), with_recent)
        assert client.post("/recommend", json={"user_id": users[3]}).json() == untouched
        # A second worker starting meanwhile reads the batch and the first worker's live segment.
        other = Intake(params, store.read_manifest(params.deploy.store))
        assert other.sessions.items(user, store.read_manifest(params.deploy.store)) == clicked
        other.close()
    with client_of(params) as restarted:  # rebuilt from the batch files the version was not trained on
        same_answer(restarted.post("/recommend", json={"user_id": user}).json(), expected)


def test_sessions_keep_what_the_served_version_was_not_trained_on():
    sessions = SessionStore(window=3, max_users=2)
    sessions.add([Event("u", f"i{n}", NOW, None) for n in range(2)], "events-20261206-120000-000001-p1")
    sessions.add([Event("u", "i2", NOW, None), Event("v", "j", NOW, None)], "events-20261206-120001-000001-p1")
    sessions.add([Event("u", "i3", NOW, None)], "events-20261206-120002-000001-p1")
    untrained = {"version": "v0001", "lineage": [{"name": "raw logs", "files": {"data/raw/ml/log.inter": {}}}]}
    assert sessions.items("u", untrained) == ["i1", "i2", "i3"]  # the window keeps the latest 3
    trained = {"version": "v0002", "lineage": [{"name": "raw logs", "files": {
        "data/raw/ml/log.inter": {}, "data/raw/incoming/events-20261206-120001-000001-p1.inter": {}}}]}
    assert trained_batches(trained) == {"events-20261206-120001-000001-p1"}
    assert sessions.items("u", trained) == ["i1", "i3"]  # i2 is in v0002's training data
    sessions.add([Event("w", "k", NOW, None)], "events-20261206-120003-000001-p1")  # a third user: v goes
    assert sessions.items("v", untrained) == [] and sessions.items("w", untrained) == ["k"]


def test_concurrent_appends_and_two_workers_share_a_folder_safely(tmp_path):
    fmt = batch_format(section("data"))
    incoming, folder = tmp_path / "incoming", tmp_path / "events"
    # The first rolls under the load; the second never does, and dies with its segment unrolled.
    workers = [EventLog(folder, incoming, fmt, roll_count=count, roll_seconds=3600) for count in (40, 10**6)]

    def load(log: EventLog, thread: int) -> None:
        for n in range(30):
            log.append([Event(f"u{thread}", f"{thread}-{n}-{m}", NOW, None) for m in range(3)])

    threads = [threading.Thread(target=load, args=(workers[t % 2], t)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert recover(folder, incoming, fmt) == []  # both segments are live: locked, so not orphans
    workers[0].close()
    workers[1]._closed.set()  # the second "dies" without rolling: its lock goes with its descriptor
    os.close(workers[1]._fd)
    assert len(recover(folder, incoming, fmt)) == 1 and not list(folder.glob("*.jsonl"))
    found = []
    for path in find_log_files(incoming, "recbole", section("data.generic"))[0]:
        found += read_interactions(path, "recbole", section("data.generic"))["item_id"].tolist()
    assert sorted(found) == sorted(f"{t}-{n}-{m}" for t in range(6) for n in range(30) for m in range(3))


def test_a_torn_last_line_is_dropped_with_a_warning(tmp_path):
    fmt = batch_format(section("data"))
    segment = tmp_path / "events" / "events-20261206-120000-000001-p1.jsonl"
    segment.parent.mkdir()
    segment.write_bytes(b'[["u","i",1765000000,null]]\n[["u","j",1765000000,null],["u","k",17650')
    with pytest.warns(UserWarning, match=r"events-20261206-120000-000001-p1.jsonl:2: dropped a torn last line"):
        [batch] = recover(segment.parent, tmp_path / "incoming", fmt)
    assert read_interactions(batch, "recbole", section("data.generic"))["item_id"].tolist() == ["i"]


def test_a_malformed_line_inside_a_segment_is_skipped_with_a_warning_and_the_rest_kept(tmp_path):
    """A damaged record (not JSON, or not rows of four fields) costs only its own line."""
    segment = tmp_path / "events-20261206-120000-000001-p1.jsonl"
    segment.write_bytes(b'[["u","i",1765000000,null]]\n{not json\n[["u","x"]]\n[["v","j",1765000001,"view"]]\n')
    with pytest.warns(UserWarning) as warned:
        events = read_segment(segment)
    assert [(e.user_id, e.item_id, e.event) for e in events] == [("u", "i", None), ("v", "j", "view")]
    assert [str(w.message).split(": skipped a malformed record")[0] for w in warned] == [f"{segment}:2", f"{segment}:3"]


GENERIC = {"pattern": "*.csv", "file_type": "csv", "sep": ",", "header": True, "user_col": "user",
           "item_col": "item", "timestamp_col": "when", "rating_col": "stars", "event_col": "kind",
           "timestamp_unit": "ms"}
FORMATS = [
    ({"format": "recbole"}, 1),
    ({"format": "movielens-100k"}, 1),
    ({"format": "movielens-csv"}, 1),
    ({"format": "generic", "generic": GENERIC}, 1),
    ({"format": "generic", "generic": {**GENERIC, "sep": ";", "header": False, "timestamp_unit": "iso",
                                       "names": ["extra", "when", "item", "user", "stars", "kind"]}}, 1),
    ({"format": "generic", "generic": {**GENERIC, "pattern": "log.jsonl", "file_type": "jsonl"}}, 1),
    ({"format": "generic", "generic": {**GENERIC, "pattern": "part-*.parquet", "file_type": "parquet"}}, 1),
    ({"format": "generic", "generic": {**GENERIC, "timestamp_col": ["y", "m", "d"], "timestamp_unit": "strptime",
                                       "timestamp_format": "%Y-%m-%d"}}, 86400),
]


@pytest.mark.parametrize(("data", "resolution"), FORMATS)
def test_batch_files_read_back_with_every_data_format(tmp_path, data, resolution):
    params = section("data", **data)
    fmt = batch_format(params)
    events = [Event("7", "50", NOW, "view"), Event("u,2", 'i"\t3\r4;', NOW + 86400 * 3 + 5, None)]
    path = fmt.write(tmp_path, "events-20261206-120000-000001-p1", events)
    assert find_log_files(tmp_path, params.format, params.generic)[0] == [path]
    frame = read_interactions(path, params.format, params.generic)
    assert frame["user_id"].tolist() == ["7", "u,2"] and frame["item_id"].tolist() == ["50", 'i"\t3\r4;']
    assert frame["timestamp"].tolist() == [e.timestamp // resolution * resolution for e in events]
    assert frame["rating"].isna().all()
    if "event" in frame:
        assert frame["event"].iloc[0] == "view" and pd.isna(frame["event"].iloc[1])


def test_a_latin_1_batch_file_refuses_what_it_cannot_hold(served):
    params = served()
    params = params.model_copy(update={"data": params.data.model_copy(update={"format": "movielens-100k"})})
    with client_of(params) as client:
        answer = post(client, [{"user_id": "7", "item_id": "\u4e2d"}])
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["msg"] == ("row 0: item_id must be encodable as latin-1 "
                                                 "(data.format movielens-100k writes its batch files so)")


@pytest.mark.slow
def test_a_kill_9_during_a_load_loses_no_acknowledged_event(served, tmp_path_factory):
    """A real `recmoo serve` (2 workers, rolls every 200 events) killed with SIGKILL, process group and
    all, while 4 clients post batches: after a restart every acknowledged event is in the batch files
    exactly once, no half-written batch was ever visible, and the sessions are back."""
    import httpx

    params = served(events_roll_count=200)
    users, items = catalog(params)
    session = [{"user_id": users[4], "item_id": item} for item in items[10:14]]
    with TestClient(create_app(params.deploy.store, params.serve)) as plain:
        expected = plain.post("/recommend", json={"user_id": users[4], "recent_items": items[10:14]}).json()
    port, log = free_port(), tmp_path_factory.mktemp("service") / "serve.log"
    url = f"http://{HOST}:{port}"
    pythonpath = os.getcwd() + os.pathsep + str(REPO)
    service = start_service(Path.cwd(), port, 2, pythonpath, log)
    acked: list[str] = []
    stop = threading.Event()
    try:
        wait_healthy(service, port, log, settle_s=2.0)
        assert httpx.post(f"{url}/events", json={"events": session}).status_code == 200

        def load(client: int) -> None:
            with httpx.Client(timeout=10) as http:
                for n in range(10**6):
                    rows = [{"user_id": f"load-{client}", "item_id": f"load{client}-{n}-{m}", "timestamp": NOW}
                            for m in range(50)]
                    try:
                        if http.post(f"{url}/events", json={"events": rows}).status_code == 200:
                            acked.extend(row["item_id"] for row in rows)
                    except httpx.TransportError:  # killed under it: not acknowledged
                        return
                    if stop.is_set():
                        return

        clients = [threading.Thread(target=load, args=(c,)) for c in range(4)]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 120
        while len(acked) < 3000:
            assert time.monotonic() < deadline and all(t.is_alive() for t in clients), f"{len(acked)} acknowledged"
            time.sleep(0.01)
        os.killpg(service.pid, signal.SIGKILL)
        service.wait()
        stop.set()
        for thread in clients:
            thread.join()
        # Whatever the kill left visible to the sensor and ingest is whole.
        for path in batches(params):
            read_interactions(path, params.data.format, params.data.generic)
        service = start_service(Path.cwd(), port, 1, pythonpath, log)  # rolls the dead workers' segments as it starts
        wait_healthy(service, port, log)
        assert httpx.post(f"{url}/recommend", json={"user_id": users[4]}).json() == expected
    finally:
        stop_service(service)
    found = [item for _, item, _ in logged(params) if item.startswith("load")]
    assert set(acked) <= set(found) and len(found) == len(set(found)) and len(acked) >= 3000
    assert not segments(params) and sum(1 for r in logged(params) if r[0] == users[4]) == len(session)
