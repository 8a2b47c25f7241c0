"""`recmoo deploy` on a store it cannot write: one error line naming the store and the OS reason, the
served version unchanged, no staging folder left behind."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recmoo_dag import store
from recmoo_dag.cli import main
from tests.conftest import REPO
from tests.deploy_support import FRONT, LOOSE, base_project, deployed_copy, write_front

# The deploy stage in a child process: the limits and mounts below must not reach pytest itself.
DEPLOY = """
import resource, signal, sys
limit = int(sys.argv[1])
if limit:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from recmoo_dag.cli import main
sys.exit(main(["deploy"]))
"""


@pytest.fixture
def served(tmp_path, tmp_path_factory, monkeypatch):
    """A project with v0001 served and a front whose deploy would publish v0002."""
    base = base_project(tmp_path_factory)
    monkeypatch.chdir(tmp_path)
    params = deployed_copy(base, tmp_path, [FRONT[0]], LOOSE)
    write_front(params, [FRONT[2]])
    assert store.current_version(params.deploy.store) == "v0001"
    return params


def deploy_command(limit: int = 0) -> list[str]:
    return [sys.executable, "-c", DEPLOY, str(limit)]


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def assert_one_error_line(err: str, *patterns: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("recmoo deploy: error: "), err[-3000:]
    for pattern in patterns:
        assert pattern in lines[0], (pattern, lines[0])


def assert_unchanged(root: Path) -> None:
    assert store.current_version(root) == "v0001" and store.list_versions(root) == ["v0001"]
    assert not list((root / store.VERSIONS).glob(".tmp-*")), "the failed publish left its staging folder"


@pytest.mark.slow
def test_deploy_past_the_file_size_limit(served):
    # RLIMIT_FSIZE makes the kernel refuse the build's writes (EFBIG): a real failed write, no root needed.
    result = subprocess.run(deploy_command(limit=4096), capture_output=True, text=True, env=child_env(), check=False)
    assert result.returncode == 1
    assert_one_error_line(result.stderr, f"{served.deploy.store}: cannot publish v0002", "File too large",
                          "v0001 is still served")
    assert_unchanged(Path(served.deploy.store))
    assert subprocess.run(deploy_command(), env=child_env(), check=False).returncode == 0  # with room again, it publishes
    assert store.current_version(served.deploy.store) == "v0002"


def test_a_failed_safetensors_write_is_one_error_line(served, monkeypatch, capsys):
    # EASE's weights are the one file safetensors writes itself, and it wraps the OS error in its own type.
    from safetensors import SafetensorError

    from recmoo_dag.generator import save_generator

    def disk_full(tensors, filename):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    save_generator(served.train.model_dir, "blend", ease_lambda=100.0, blend_weight=0.5)
    monkeypatch.setattr("recmoo_dag.bundle.save_file", disk_full)
    assert main(["deploy"]) == 1
    assert_one_error_line(capsys.readouterr().err, f"{served.deploy.store}: cannot publish v0002",
                          "No space left on device", "ease.safetensors", "v0001 is still served")
    assert_unchanged(Path(served.deploy.store))


def namespaces_work() -> bool:
    """Whether this user may mount a tmpfs in its own user and mount namespace (util-linux unshare)."""
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True, check=False)
    return probe.returncode == 0


# Inside the namespace: the store becomes a small tmpfs holding a copy of itself, then is filled up or
# remounted read-only; the deploy runs; what the store holds afterwards is printed (the mount ends with it).
ON_TMPFS = """
set -e
mount -t tmpfs -o size=16m tmpfs "$STORE"
cp -a "$SAVED/." "$STORE/"
case "$HOW" in
  full) dd if=/dev/zero of="$STORE/filler" bs=64k 2>/dev/null || true ;;
  read-only) mount -o remount,ro "$STORE" ;;
esac
set +e
"$@" 2>"$ERR"
echo "rc=$?"
echo "current=$(readlink "$STORE/CURRENT")"
echo "entries=$(ls -A "$STORE/versions" | tr '\\n' ' ')"
"""


@pytest.mark.slow
@pytest.mark.skipif(not namespaces_work(), reason="no unprivileged user+mount namespaces to mount a tmpfs in")
@pytest.mark.parametrize("how, reason", [("full", "No space left on device"), ("read-only", "Read-only file system")])
def test_deploy_into_a_full_or_read_only_filesystem(served, tmp_path, how, reason):
    root = Path(served.deploy.store).resolve()
    saved, err = tmp_path / "saved-store", tmp_path / "stderr.txt"
    shutil.copytree(root, saved, symlinks=True)
    env = {**child_env(), "STORE": str(root), "SAVED": str(saved), "HOW": how, "ERR": str(err)}
    result = subprocess.run(["unshare", "-rm", "sh", "-c", ON_TMPFS, "sh", *deploy_command()],
                            capture_output=True, text=True, env=env, check=False)
    report = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert report["rc"] == "1", (result.stdout, result.stderr, err.read_text()[-3000:])
    assert_one_error_line(err.read_text(), served.deploy.store, reason, "v0001 is still served")
    assert report["current"] == "versions/v0001" and report["entries"].split() == ["v0001"], report


def test_a_model_of_another_catalogue_is_refused_and_the_champion_kept(served, capsys):
    """features rebuilt from another log while the model stayed (a stage run by hand, outside dvc repro):
    its item indices would mean other items, so deploy names both and the fix, and publishes nothing."""
    from recmoo_dag.features import build_features, load_features, write_features
    from recmoo_dag.synth import synthesize

    trained_on = load_features(served.features.dir).n_items
    interactions, items = synthesize(n_users=120, n_items=60, n_events=4000, n_categories=6, seed=3)
    write_features(build_features(interactions, items, served.features), served.features.dir)
    assert load_features(served.features.dir).n_items != trained_on
    assert main(["deploy"]) == 1
    assert_one_error_line(capsys.readouterr().err, f"{served.train.model_dir} was trained on {trained_on} items but "
                          f"{served.features.dir} has", "re-run `dvc repro`")
    assert_unchanged(Path(served.deploy.store))
