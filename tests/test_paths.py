"""One path rule: every configured path, and every file read below data/raw, resolves inside the
project (`..` and symlinks followed); what leaves it is refused with one line naming it, before
anything is read or written."""
import os
from pathlib import Path

import pytest

from recmoo_dag.cli import main
from recmoo_dag.config import load_params
from recmoo_dag.errors import ConfigError
from recmoo_dag.synth import write_synthetic_log
from tests.conftest import write_params


@pytest.fixture
def outside(tmp_path):
    """A folder next to the project, holding a file an attacker would like ingested or hashed."""
    folder = tmp_path.parent / f"{tmp_path.name}-outside"
    folder.mkdir()
    (folder / "secret.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t1\n")
    yield folder
    for file in folder.iterdir():
        file.unlink()
    folder.rmdir()


def one_error_line(capsys, command: str, *named: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"recmoo {command}: error:"), err
    for text in named:
        assert text in err, err
    return err


def test_a_dotdot_dataset_dir_is_refused_before_fetch_touches_it(project, tmp_path, outside, capsys):
    escape = f"data/raw/../../../{outside.name}"
    write_params(tmp_path, {"data": {"source": "local", "dataset_dir": escape}})
    assert main(["fetch"]) == 1
    one_error_line(capsys, "fetch", "data.dataset_dir", escape)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.inter"]  # no SOURCE.json written there


@pytest.mark.parametrize("key", ["data.raw_dir", "deploy.store", "train.model_dir", "validate.report"])
def test_every_configured_path_must_resolve_inside_the_project(project, tmp_path, outside, key):
    section, name = key.split(".")
    overrides = {section: {name: f"../{outside.name}/{name}"}}
    if key == "data.raw_dir":  # the dataset folder must stay below it
        overrides["data"]["dataset_dir"] = f"../{outside.name}/raw_dir/ml-100k"
    write_params(tmp_path, overrides)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + ".*outside the project"):
        load_params(tmp_path / "params.yaml")


def test_a_symlinked_folder_that_leaves_the_project_is_refused(project, tmp_path, outside):
    (tmp_path / "models").symlink_to(outside, target_is_directory=True)
    write_params(tmp_path)
    with pytest.raises(ConfigError, match=r"'models/.*' resolves to .*-outside/.*outside the project"):
        load_params(tmp_path / "params.yaml")


def test_paths_inside_the_project_pass_however_written(project, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "store-link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    params = project({"deploy": {"store": "store-link/deployments"},
                      "data": {"dataset_dir": "data/raw/./ml-100k"}, "train": {"model_dir": str(tmp_path / "m")}})
    assert params.deploy.store == "store-link/deployments"


def test_a_symlinked_log_leaving_the_raw_folder_is_not_ingested(project, outside, capsys):
    params = project()
    write_synthetic_log(params.data.dataset_dir, n_users=30, n_items=20, n_events=600, seed=0)
    link = Path(params.data.raw_dir, "extra.inter")
    link.symlink_to(outside / "secret.inter")
    assert main(["ingest"]) == 1
    one_error_line(capsys, "ingest", str(link), str(outside / "secret.inter"), "refused")
    assert not Path(params.data.interactions).exists()


def test_fetch_refuses_to_record_a_symlink_leaving_a_local_dataset(project, tmp_path, outside, capsys):
    params = project({"data": {"source": "local"}})
    write_synthetic_log(params.data.dataset_dir, n_users=30, n_items=20, n_events=600, seed=0)
    os.symlink(outside / "secret.inter", Path(params.data.dataset_dir, "more.inter"))
    assert main(["fetch"]) == 1
    one_error_line(capsys, "fetch", "more.inter", "refused")
    assert not Path(params.data.dataset_dir, "SOURCE.json").exists()
