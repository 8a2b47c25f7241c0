"""SeqRecModel: shapes, causality, left-padding invariance, and the safetensors round trip."""
import json

import pytest
import torch
from safetensors.torch import load_file

from recmoo_dag.errors import InputError
from recmoo_dag.model import SeqRecModel, load_model, save_model

ARCH = {"n_items": 30, "d_model": 16, "n_heads": 2, "n_layers": 2, "dropout": 0.2, "max_len": 8}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return SeqRecModel(**ARCH).eval()


def test_shapes_and_padding_column(model):
    seq = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    assert model(seq).shape == (2, 5, 16)
    scores = model.score_next(seq)
    assert scores.shape == (2, 31) and scores.dtype == torch.float32
    assert torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()


def test_score_next_is_the_last_position_of_the_full_forward(model):
    seq = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    full = model.item_logits(model(seq)[:, -1])  # (2, I): every position computed
    torch.testing.assert_close(model.score_next(seq)[:, 1:], full, rtol=1e-5, atol=1e-5)


def test_left_padding_does_not_change_scores(model):
    short = model.score_next(torch.tensor([[7, 8, 9]]))
    padded = model.score_next(torch.tensor([[0, 0, 0, 0, 7, 8, 9]]))
    torch.testing.assert_close(short, padded, rtol=1e-5, atol=1e-5)


def test_causal_a_position_ignores_later_items(model):
    a = model(torch.tensor([[1, 2, 3, 4, 5]]))
    b = model(torch.tensor([[1, 2, 3, 9, 11]]))
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3:], b[:, 3:])


def test_long_sequences_keep_their_last_max_len_items(model):
    long = torch.arange(1, 13)[None]  # 12 items, max_len 8
    torch.testing.assert_close(model.score_next(long), model.score_next(long[:, -8:]))


def test_dropout_only_in_training(model):
    seq = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(model(seq), model(seq))
    model.train()
    assert not torch.allclose(model(seq), model(seq))


def test_save_and_load_round_trip(model, tmp_path):
    save_model(model, tmp_path / "m", architecture=ARCH, provenance={"data_hash": "abc"})
    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert weights["item_embedding.weight"].shape == (31, 16)
    assert torch.count_nonzero(weights["item_embedding.weight"][0]) == 0  # padding row
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["architecture"] == ARCH and config["data_hash"] == "abc"
    loaded = load_model(tmp_path / "m")
    assert not loaded.training
    seq = torch.tensor([[0, 4, 5, 6]])
    torch.testing.assert_close(loaded.score_next(seq), model.score_next(seq), rtol=0, atol=0)


def test_load_model_names_the_missing_file(tmp_path):
    with pytest.raises(InputError, match="config.json.*recmoo train"):
        load_model(tmp_path)
