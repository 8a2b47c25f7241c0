import pytest

from recmoo_dag.config import ConfigError, Params, load_params
from tests.conftest import REPO


def test_repo_params_load_with_every_section():
    params = load_params(REPO / "params.yaml")
    assert params.data.format == "recbole"
    assert params.validation.max_duplicate_share == 0.01
    assert params.features.min_user_interactions >= 3


def test_repo_params_state_every_default_explicitly():
    """params.yaml is the single source: it spells out every key the schema has."""
    import yaml

    written = yaml.safe_load((REPO / "params.yaml").read_text())
    schema = Params().model_dump(by_alias=True)

    def missing(schema_part, written_part, prefix=""):
        for key, value in schema_part.items():
            if key not in written_part:
                yield prefix + key
            elif isinstance(value, dict):
                yield from missing(value, written_part[key], f"{prefix}{key}.")

    assert list(missing(schema, written)) == []


def test_unknown_key_is_an_error_naming_the_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 1\nfeatures:\n  min_user_interaction: 5\n")
    with pytest.raises(ConfigError, match=r"features\.min_user_interaction: Extra inputs"):
        load_params(path)


def test_wrong_type_is_an_error_naming_the_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("validate:\n  min_users: many\n")
    with pytest.raises(ConfigError, match=r"validate\.min_users"):
        load_params(path)


def test_strptime_without_format_is_rejected(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  format: generic\n  generic:\n    timestamp_unit: strptime\n")
    with pytest.raises(ConfigError, match="timestamp_format"):
        load_params(path)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("seed: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")
