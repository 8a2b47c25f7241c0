"""What the locked environment must hold: both sides of the ANTLR conflict (see README: installation
notes), and pytest-xdist's grouping of the suite's costly tests."""
import importlib.metadata as md
import subprocess
import sys

import yaml


def test_dagster_string_asset_selection_parses():
    import dagster as dg

    selection = dg.AssetSelection.from_string('key:"features"+ or key:train')
    assert "features" in str(selection)
    assert md.version("antlr4-python3-runtime").startswith("4.13")


def test_dvc_hydra_composition_with_interpolation(tmp_path):
    from dvc.utils.hydra import compose_and_dump

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("train:\n  lr: 0.001\n  label: lr=${train.lr}\n")
    out = tmp_path / "params.yaml"
    compose_and_dump(out, str(tmp_path / "conf"), None, "config", str(tmp_path), ["train.lr=0.01"])
    composed = yaml.safe_load(out.read_text())
    assert composed["train"]["lr"] == 0.01
    assert composed["train"]["label"] == "lr=0.01"  # omegaconf's interpolation grammar ran


def test_xdist_loadgroup_keeps_a_group_on_one_worker(tmp_path):
    """The suite's costly shared fixtures (a UI, a materialized project) are built once because their
    tests carry one xdist_group: with pytest 9.2 the groups spread silently over the workers
    (pytest-xdist#1386) and each worker builds them again. requirements.lock pins a pytest they hold in."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_grouped.py").write_text(
        "import os\nimport pytest\n\n"
        "pytestmark = pytest.mark.xdist_group('shared')\n\n"
        "@pytest.mark.parametrize('n', range(6))\n"
        "def test_member(n):\n"
        "    with open('workers.txt', 'a') as out:\n"
        "        out.write(os.environ['PYTEST_XDIST_WORKER'] + '\\n')\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                          "--dist", "loadgroup", "test_grouped.py"], cwd=tmp_path, capture_output=True,
                         text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    workers = (tmp_path / "workers.txt").read_text().split()
    assert len(workers) == 6 and len(set(workers)) == 1, f"one group ran on {sorted(set(workers))}"
