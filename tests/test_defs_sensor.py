"""The incoming-logs sensor, tick by tick, with dagster.build_sensor_context."""
import json

import pytest
from dagster import AssetSelection, build_sensor_context, define_asset_job

from recmoo_dag.defs.sensors import Cursor, batch_key, build_incoming_sensor
from tests.conftest import write_params


@pytest.fixture
def incoming(tmp_path):
    write_params(tmp_path)  # defaults: format recbole (*.inter, *.item), incoming_dir data/raw/incoming
    folder = tmp_path / "data" / "raw" / "incoming"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def tick(incoming):
    """Evaluate one tick from the previous tick's cursor, as the daemon does; returns the tick data."""
    sensor = build_incoming_sensor(incoming.parents[2], define_asset_job("new_logs", AssetSelection.all()),
                                   interval=30, enabled=True)
    state = {"cursor": None}

    def run():
        data = sensor.evaluate_tick(build_sensor_context(cursor=state["cursor"], sensor_name=sensor.name))
        state["cursor"] = data.cursor
        return data

    return run


HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def write(path, text=HEADER + "1\t2\t4\t1600000000\n"):
    path.write_text(text)
    return path


def test_new_file_gives_one_run_once_its_size_settles(incoming, tick):
    assert "no log files" in tick().skip_message
    write(incoming / "batch1.inter")
    first = tick()
    assert not first.run_requests and "waiting for 1 file(s)" in first.skip_message
    second = tick()
    [request] = second.run_requests
    assert request.run_key.startswith("incoming-")
    assert request.tags["recmoo/incoming_files"] == "batch1.inter"
    assert list(json.loads(second.cursor)["seen"].values()) == ["data/raw/incoming/batch1.inter"]
    assert not tick().run_requests  # nothing new afterwards


def test_same_file_again_gives_no_second_run(incoming, tick):
    write(incoming / "batch1.inter")
    tick()
    assert len(tick().run_requests) == 1
    write(incoming / "batch1_copy.inter")  # the same bytes delivered twice, under another name
    assert not tick().run_requests
    again = tick()
    assert not again.run_requests and "already sent to a run" in again.skip_message


def test_partial_files_are_ignored(incoming, tick):
    write(incoming / "batch2.inter.part")
    write(incoming / ".batch3.inter")
    write(incoming / "batch4.inter.tmp")
    growing = write(incoming / "batch5.inter")
    tick()
    with open(growing, "a") as handle:  # still being written: size changed between ticks
        handle.write("1\t3\t5\t1600000100\n")
    data = tick()
    assert not data.run_requests
    assert "ignored 3 file(s)" in data.skip_message and "waiting for 1 file(s)" in data.skip_message
    [request] = tick().run_requests  # settled now; the temp names still never count
    assert request.tags["recmoo/incoming_files"] == "batch5.inter"


def test_several_files_give_one_run_with_all(incoming, tick):
    write(incoming / "a.inter")
    write(incoming / "b.inter", HEADER + "2\t3\t5\t1600000000\n")
    write(incoming / "b.item", "item_id:token\ttitle:token_seq\n3\tX\n")
    tick()
    [request] = tick().run_requests
    assert request.tags["recmoo/incoming_files"] == "a.inter,b.inter,b.item"


def test_run_key_is_the_contents_not_the_names():
    assert batch_key({"x.inter": "h1", "y.inter": "h2"}) == batch_key({"b.inter": "h2", "a.inter": "h1"})
    assert batch_key({"x.inter": "h1"}) != batch_key({"x.inter": "h3"})
    assert Cursor.load(Cursor(seen={"h": "f"}).dump()).seen == {"h": "f"}
