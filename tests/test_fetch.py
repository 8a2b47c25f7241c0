"""The fetch stage's core: MovieLens-100K from the pinned wheel (sha256-checked) and the user's own files."""
import io
import zipfile

import pytest

from recmoo_dag import fetch
from recmoo_dag.data import read_logs
from recmoo_dag.errors import DataError
from recmoo_dag.fetch import record_local
from tests.conftest import section


def _fake_wheel(contents: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        for name, payload in contents.items():
            wheel.writestr(fetch.RECBOLE_MEMBER_DIR + name, payload)
    return buffer.getvalue()


def test_fetch_checksum_mismatch_is_an_error(tmp_path, monkeypatch):
    def fake_pip(cmd, **kwargs):
        target = cmd[cmd.index("-d") + 1]
        (tmp_path / "whl").mkdir(exist_ok=True)
        payload = _fake_wheel({name: b"tampered" for name in fetch.ML100K_SHA256})
        (fetch.Path(target) / "recbole-1.2.1-py3-none-any.whl").write_bytes(payload)
        return fetch.subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fetch.subprocess, "run", fake_pip)
    with pytest.raises(DataError, match="does not match the pinned"):
        fetch.fetch_movielens(tmp_path / "ml", "recbole")
    assert not (tmp_path / "ml" / fetch.PROVENANCE_FILE).exists()


def test_fetch_without_network_says_where_to_put_files(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch.subprocess, "run",
                        lambda cmd, **kw: fetch.subprocess.CompletedProcess(cmd, 1, "", "No route to host"))
    with pytest.raises(DataError, match=r"put ml-100k\.inter.*by hand"):
        fetch.fetch_movielens(tmp_path / "ml", "recbole")


def test_fetch_accepts_files_placed_by_hand(tmp_path, monkeypatch):
    digests = {}
    for name in fetch.ML100K_SHA256:
        (tmp_path / name).write_bytes(name.encode())
        digests[name] = fetch.sha256_file(tmp_path / name)
    monkeypatch.setattr(fetch, "ML100K_SHA256", digests)
    monkeypatch.setattr(fetch.subprocess, "run", lambda *a, **k: pytest.fail("must not download"))
    provenance = fetch.fetch_movielens(tmp_path, "recbole")
    assert provenance["sha256"] == digests
    first = (tmp_path / fetch.PROVENANCE_FILE).read_bytes()
    fetch.fetch_movielens(tmp_path, "recbole")
    assert (tmp_path / fetch.PROVENANCE_FILE).read_bytes() == first  # the fetch stage's output is reproducible


def test_real_fetch_from_the_package_index(tmp_path):
    """The pinned source, for real: the RecBole wheel from the index, checked by sha256."""
    provenance = fetch.fetch_movielens(tmp_path, "recbole")
    assert provenance["sha256"] == fetch.ML100K_SHA256
    log = read_logs(tmp_path, "recbole", section("data.generic"))
    assert len(log.interactions) == 100_000
    assert log.interactions["user_id"].nunique() == 943
    assert len(log.items) == 1682


def test_local_source_records_the_users_files_and_refuses_an_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no such folder.*Your own logs"):
        record_local(tmp_path / "mine")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / ".hidden").write_text("x")
    with pytest.raises(DataError, match="the folder is empty"):
        record_local(tmp_path / "mine")
    (tmp_path / "mine" / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,2,3,4\n")
    provenance = record_local(tmp_path / "mine")
    assert provenance == {"source": "local", "sha256": {"ratings.csv": fetch.sha256_file(tmp_path / "mine" / "ratings.csv")}}
    assert record_local(tmp_path / "mine") == provenance  # SOURCE.json itself is not recorded
