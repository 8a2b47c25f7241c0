"""Both sides of the ANTLR conflict work in one environment (see README: installation notes)."""
import importlib.metadata as md

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
