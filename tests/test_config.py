import pytest

from recmoo_dag.config import ConfigError, Params, load_params
from tests.conftest import REPO, write_params


def test_repo_params_load_with_every_section():
    params = load_params(REPO / "params.yaml")
    assert params.data.format == "recbole"
    assert params.validation.max_duplicate_share == 0.01
    assert params.features.min_user_interactions >= 3


def test_every_default_is_written_once_in_params_yaml():
    """config.py holds types and bounds only: no field anywhere in the schema has a default of its own."""
    from pydantic import BaseModel

    def fields_with_defaults(model: type[BaseModel], prefix: str = ""):
        for name, field in model.model_fields.items():
            if not field.is_required():
                yield prefix + name
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                yield from fields_with_defaults(annotation, f"{prefix}{name}.")

    assert list(fields_with_defaults(Params)) == []


def test_a_missing_key_is_an_error_naming_it(tmp_path):
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    del raw["features"]["min_item_interactions"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"features\.min_item_interactions: Field required"):
        load_params(path)


def test_unknown_key_is_an_error_naming_the_key(tmp_path):
    path = write_params(tmp_path, {"features": {"min_user_interaction": 5}})
    with pytest.raises(ConfigError, match=r"features\.min_user_interaction: Extra inputs"):
        load_params(path)


def test_wrong_type_is_an_error_naming_the_key(tmp_path):
    path = write_params(tmp_path, {"validate": {"min_users": "many"}})
    with pytest.raises(ConfigError, match=r"validate\.min_users"):
        load_params(path)


def test_strptime_without_format_is_rejected(tmp_path):
    path = write_params(tmp_path, {"data": {"format": "generic", "generic": {"timestamp_unit": "strptime"}}})
    with pytest.raises(ConfigError, match="timestamp_unit 'strptime' needs timestamp_format"):
        load_params(path)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("seed: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"features": {"valid_quantile": 0.9, "test_quantile": 0.8}},
     r"features\.valid_quantile 0\.9 must be below test_quantile 0\.8"),
    ({"tune": {"space": {"dropout": [0.5, 0.1]}}}, r"tune\.space\.dropout: the low end 0\.5 must be below the high end 0\.1"),
    ({"search": {"n_evals": 1000, "n_gen": 10}}, r"set exactly one of search\.n_evals and search\.n_gen"),
    ({"search": {"n_evals": None, "n_gen": None}}, r"set exactly one of search\.n_evals and search\.n_gen"),
    ({"search": {"objectives": ["ndcg", "ndcg"]}}, r"search\.objectives needs at least 2 distinct objectives"),
    ({"data": {"format": "generic", "generic": {"header": False, "names": None}}},
     r"header: false needs names"),
])
def test_a_rule_across_keys_is_an_error_naming_them(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_params(write_params(tmp_path, overrides))
