"""The deployment store: atomic publish under kills, the CURRENT pointer, rollback, the decision log."""
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from recmoo_dag import store
from tests.conftest import REPO


def publish_plain(root: Path, tag: str) -> str:
    def build(folder: Path, name: str) -> None:
        (folder / "payload.txt").write_text(tag)
        (folder / "manifest.json").write_text(json.dumps({"version": name}))

    with store.locked(root):
        return store.publish(root, build)


def test_versions_are_numbered_and_rollback_switches_between_them(tmp_path):
    root = tmp_path / "store"
    assert store.current_version(root) is None
    with pytest.raises(store.StoreError, match="nothing deployed yet"):
        store.version_dir(root)
    assert [publish_plain(root, t) for t in "abc"] == ["v0001", "v0002", "v0003"]
    assert (store.version_dir(root) / "payload.txt").read_text() == "c"
    assert store.rollback(root) == ("v0003", "v0002")
    assert store.rollback(root, "1") == ("v0002", "v0001")
    with pytest.raises(store.StoreError, match="v0001 is the oldest version"):
        store.rollback(root)
    with pytest.raises(store.StoreError, match="no complete version v0009"):
        store.rollback(root, "v9")
    with pytest.raises(store.StoreError, match="not a version"):
        store.parse_version("latest")
    assert publish_plain(root, "d") == "v0004"  # numbering continues after the highest, whatever is served
    events = store.read_decisions(root)
    assert [e["event"] for e in events] == ["rollback", "rollback"] and events[0]["to"] == "v0002"


def tear(root: Path) -> None:
    """What a writer killed mid-append leaves: the start of a record, no newline."""
    with open(root / store.DECISIONS, "a") as handle:
        handle.write('{"event": "depl')


def test_a_torn_last_line_of_the_decision_log_is_skipped(tmp_path):
    store.log_decision(tmp_path, {"event": "deploy", "n": 1})
    tear(tmp_path)
    with pytest.warns(UserWarning, match=rf"{tmp_path / store.DECISIONS}:2: .*torn"):
        assert store.read_decisions(tmp_path) == [{"event": "deploy", "n": 1}]


def test_records_appended_after_a_torn_line_are_kept(tmp_path):
    store.log_decision(tmp_path, {"n": 1})
    tear(tmp_path)
    for n in (2, 3):  # the next writer starts on a fresh line: nothing is glued to the torn record
        store.log_decision(tmp_path, {"n": n})
    with pytest.warns(UserWarning, match=rf"{tmp_path / store.DECISIONS}:2: "):
        assert store.read_decisions(tmp_path) == [{"n": 1}, {"n": 2}, {"n": 3}]


@pytest.mark.parametrize("bad", ['{"event": "depl', "\x00\x00\x00", "[1, 2]", "{not json}"])
def test_a_bad_line_in_the_middle_is_skipped_and_named(tmp_path, bad):
    (tmp_path / store.DECISIONS).write_text(f'{{"n": 1}}\n\n{bad}\n{{"n": 2}}\n')
    with pytest.warns(UserWarning, match=rf"{tmp_path / store.DECISIONS}:3: ") as caught:
        assert store.read_decisions(tmp_path) == [{"n": 1}, {"n": 2}]
    assert len(caught) == 1


def test_a_decision_that_cannot_be_appended_is_a_store_error(tmp_path):
    (tmp_path / store.DECISIONS).mkdir()
    with pytest.raises(store.StoreError, match=f"{tmp_path}: cannot append to {store.DECISIONS} .*Is a directory"):
        store.log_decision(tmp_path, {"n": 1})


def test_the_sync_sensor_sees_a_rollback_logged_after_a_torn_line(tmp_path):
    # dvc_sync (defs/sync.py) tells a rollback from a deploy by the last record of decisions.jsonl.
    from dagster import AssetKey, AssetMaterialization, DagsterInstance

    from recmoo_dag.defs.sync import SERVED, _observe_served
    from tests.conftest import write_params

    write_params(tmp_path)
    root = tmp_path / "deployments"
    publish_plain(root, "a")
    publish_plain(root, "b")
    tear(root)
    store.rollback(root)
    with DagsterInstance.ephemeral() as instance:
        instance.report_runless_asset_event(AssetMaterialization("deploy", metadata={SERVED: "v0002"}))
        with pytest.warns(UserWarning, match="decisions.jsonl:1: "):
            assert _observe_served(instance, tmp_path)
        (record,) = instance.fetch_observations(AssetKey("deploy"), limit=1).records
        assert record.asset_observation.metadata["event"].value == "rollback (was v0002)"


# ---------------------------------------------------------------- a store that cannot be written
def no_space(folder: Path, name: str) -> None:
    (folder / "weights.bin").write_text("half")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "weights.bin"))


def test_a_failed_publish_removes_its_staging_folder_and_keeps_current(tmp_path):
    root = tmp_path / "store"
    publish_plain(root, "a")
    with store.locked(root), pytest.raises(store.StoreError) as raised:
        store.publish(root, no_space)
    message = str(raised.value)
    assert str(root) in message and "No space left on device" in message and "v0001 is still served" in message
    assert "free space" in message and "\n" not in message
    assert not list((root / store.VERSIONS).glob(".tmp-*"))
    assert store.current_version(root) == "v0001" and store.list_versions(root) == ["v0001"]
    assert publish_plain(root, "b") == "v0002"


def test_a_store_that_is_not_a_folder_is_a_store_error(tmp_path):
    # Tests may run as root, which ignores permission bits: here the store cannot be written because a
    # file stands where a folder must be (test_deploy_failures.py has a real full and read-only filesystem).
    root = tmp_path / "store"
    publish_plain(root, "a")
    (root / store.VERSIONS).rename(tmp_path / "moved")
    (root / store.VERSIONS).write_text("")
    with store.locked(root), pytest.raises(store.StoreError, match=f"{root}: cannot publish a new version: "):
        store.publish(root, no_space)
    assert store.current_version(root) == "v0001"
    (tmp_path / "file").write_text("")
    with pytest.raises(store.StoreError, match=f"{tmp_path / 'file'}: cannot lock the store"), \
            store.locked(tmp_path / "file"):
        pass


def test_a_failed_switch_leaves_current_alone(tmp_path):
    root = tmp_path / "store"
    publish_plain(root, "a")
    (root / f".{store.CURRENT}.tmp-{os.getpid()}").mkdir()  # the temporary link's name is taken by a folder
    (root / f".{store.CURRENT}.tmp-{os.getpid()}" / "x").write_text("")
    with pytest.raises(store.StoreError, match=f"{root}: cannot switch to v0001"):
        store.switch(root, "v0001")
    assert store.current_version(root) == "v0001"


def test_a_build_without_a_manifest_publishes_nothing(tmp_path):
    with store.locked(tmp_path), pytest.raises(store.StoreError, match="wrote no manifest.json"):
        store.publish(tmp_path, lambda folder, name: (folder / "x").write_text("x"))
    assert store.current_version(tmp_path) is None and store.list_versions(tmp_path) == []


def test_store_is_ignored_by_git_and_no_dvc_out():
    assert "/deployments/" in (REPO / ".gitignore").read_text().splitlines()
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    outs = [str(o if isinstance(o, str) else next(iter(o))) for s in stages.values()
            for key in ("outs", "metrics", "plots") for o in s.get(key, [])]
    assert not any(o.startswith(("deployments", "${deploy.store}")) for o in outs)


# ------------------------------------------------------------------------------ atomic publish
KILLER = """
import hashlib, json, os, signal, sys
sys.path.insert(0, {repo!r})
from recmoo_dag import store

root, kill_at, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])

def build(folder, name):
    digests = {{}}
    for i in range(8):
        data = os.urandom(256 * 1024)
        (folder / f"part{{i}}.bin").write_bytes(data)
        digests[f"part{{i}}.bin"] = hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps({{"version": name, "files": digests}}))

def hook(step):
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

for _ in range(rounds):
    with store.locked(root):
        store.publish(root, build, hook)
"""


def run_killer(root: Path, kill_at: str, rounds: int = 1) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", KILLER.format(repo=str(REPO)), str(root), kill_at, str(rounds)])


def assert_whole(root: Path) -> str:
    """CURRENT names a complete version whose every file matches its manifest; returns its name."""
    import hashlib

    name = store.current_version(root)
    folder = store.version_dir(root, name)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["version"] == name
    for file, digest in manifest["files"].items():
        assert hashlib.sha256((folder / file).read_bytes()).hexdigest() == digest, f"{name}/{file} is torn"
    return name


@pytest.mark.slow
def test_publish_killed_at_each_step_leaves_the_old_or_the_new_version(tmp_path):
    root = tmp_path / "store"
    assert run_killer(root, "never").wait() == 0
    assert assert_whole(root) == "v0001"
    # Killed before the symlink replaces CURRENT: the old version serves; after: the new one.
    for step, switched in (("staging", False), ("built", False), ("renamed", False), ("linked", False),
                           ("switched", True)):
        before = store.current_version(root)
        assert run_killer(root, step).wait() == -signal.SIGKILL
        now = assert_whole(root)
        assert (now != before) == switched, (step, before, now)
    # A killed publish never blocks the next one (the kernel released the lock; staging is cleaned).
    assert run_killer(root, "never").wait() == 0
    assert not list((root / store.VERSIONS).glob(".tmp-*"))


@pytest.mark.slow
def test_publish_killed_at_random_instants_never_leaves_a_mix(tmp_path):
    root = tmp_path / "store"
    assert run_killer(root, "never").wait() == 0
    rng = random.Random(1)
    for _ in range(8):
        process = run_killer(root, "never", rounds=50)
        time.sleep(rng.uniform(0.15, 0.6))  # interpreter start is ~0.1 s: kills land mid-publish
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert_whole(root)
    assert len(store.list_versions(root)) > 3


def test_recmoo_rollback_switches_says_so_and_refuses_past_the_oldest(tmp_path, monkeypatch, capsys):
    from recmoo_dag.cli import main
    from tests.conftest import write_params

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, {"deploy": {"store": "deployments"}})
    root = tmp_path / "deployments"
    publish_plain(root, "one")
    publish_plain(root, "two")
    assert main(["rollback"]) == 0
    assert capsys.readouterr().out.startswith("rollback: now serving v0001 (was v0002); running services pick it up")
    assert store.current_version(root) == "v0001"
    assert main(["rollback"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("recmoo rollback: error: ") and "v0001 is the oldest version" in err and err.count("\n") == 1
    assert store.current_version(root) == "v0001"
    assert main(["rollback", "v2"]) == 0 and store.current_version(root) == "v0002"
