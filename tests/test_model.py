"""SeqRecModel: shapes, baskets as sets, block causality, left-padding invariance, the safetensors round trip."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from recmoo_dag.errors import InputError
from recmoo_dag.evaluate import left_padded
from recmoo_dag.model import SeqRecModel, load_model, save_model
from recmoo_dag.windows import histories_of

ARCH = {"n_items": 30, "d_model": 16, "n_heads": 2, "n_layers": 2, "dropout": 0.2, "max_len": 8}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return SeqRecModel(**ARCH).eval()


def one_per_basket(seq: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded rows where every item is a basket of its own (the classic sequence)."""
    items = torch.tensor(seq)
    real = items != 0
    return items, torch.where(real, real.cumsum(dim=1) - 1, -1)


def test_shapes_and_padding_column(model):
    seq, baskets = one_per_basket([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    assert model(seq, baskets).shape == (2, 5, 16)
    scores = model.score_next(seq, baskets)
    assert scores.shape == (2, 31) and scores.dtype == torch.float32
    assert torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()


def test_the_order_inside_a_basket_changes_nothing(model):
    """Items of one timestamp share a position and see each other: any order inside a basket gives
    the same next-basket scores (up to float rounding), while the order of baskets matters."""
    baskets = torch.tensor([[-1, 0, 1, 1, 1, 2, 2]])
    a = model.score_next(torch.tensor([[0, 4, 7, 8, 9, 2, 3]]), baskets)
    b = model.score_next(torch.tensor([[0, 4, 9, 7, 8, 3, 2]]), baskets)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    later = model.score_next(torch.tensor([[0, 2, 7, 8, 9, 4, 3]]), baskets)  # 4 and 2 swap baskets
    assert not torch.allclose(a, later)


def test_a_basket_sees_itself_and_earlier_baskets_only(model):
    baskets = torch.tensor([[0, 1, 1, 2, 3]])
    a = model(torch.tensor([[1, 2, 3, 4, 5]]), baskets)
    b = model(torch.tensor([[1, 2, 3, 9, 11]]), baskets)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3:], b[:, 3:])
    torch.testing.assert_close(a[:, 1], a[:, 2])  # one basket, one state


def test_left_padding_does_not_change_scores(model):
    short = model.score_next(*one_per_basket([[7, 8, 9]]))
    padded = model.score_next(*one_per_basket([[0, 0, 0, 0, 7, 8, 9]]))
    torch.testing.assert_close(short, padded, rtol=1e-5, atol=1e-5)


def test_the_input_window_keeps_whole_baskets():
    # baskets {1}, {2, 3}, {4, 5, 6}, {7}: a window of 5 cannot hold {2, 3} whole beside the rest
    history = histories_of(np.array([0, 7]), np.arange(1, 8), np.array([1, 1, 0, 1, 0, 0, 1], dtype=bool))
    items, baskets = left_padded(history, np.array([0]), 5)
    assert items.tolist() == [[0, 4, 5, 6, 7]] and baskets.tolist() == [[-1, 0, 0, 0, 1]]
    items, baskets = left_padded(history, np.array([0]), 2)  # {4, 5, 6} does not fit: padding instead
    assert items.tolist() == [[0, 7]] and baskets.tolist() == [[-1, 0]]
    # baskets {1}, {2, 3, 4}: a last basket longer than the window gives its last events
    history = histories_of(np.array([0, 4]), np.arange(1, 5), np.array([1, 1, 0, 0], dtype=bool))
    items, baskets = left_padded(history, np.array([0]), 2)
    assert items.tolist() == [[3, 4]] and baskets.tolist() == [[0, 0]]


def test_dropout_only_in_training(model):
    seq, baskets = one_per_basket([[1, 2, 3]])
    torch.testing.assert_close(model(seq, baskets), model(seq, baskets))
    model.train()
    assert not torch.allclose(model(seq, baskets), model(seq, baskets))


def test_a_fused_item_table_is_reused_for_scoring_only_while_its_weights_stand():
    """"fuse" scores through id + projected text vectors: scoring reuses the table it fused, and an
    optimizer step or loaded weights make it fuse again, bit for bit what a fresh fusion gives."""
    torch.manual_seed(0)
    fused = SeqRecModel(**ARCH, item_text="fuse", text_dim=12, id_dropout=0.5).eval()
    with torch.no_grad():
        fused.text_vectors.normal_()
    seq = one_per_basket([[0, 4, 5, 6]])

    def fresh_scores():
        with torch.no_grad():
            fused._fused_key = None  # forget the cached table: the reference fuses afresh
            return fused.score_next(*seq)

    with torch.inference_mode():
        first = fused.score_next(*seq)
    with torch.no_grad():
        assert fused.item_table() is fused.item_table()  # reused, not fused again
    torch.testing.assert_close(first, fresh_scores(), rtol=0, atol=0)
    fused.train()
    loss = fused.item_logits(fused(*seq)[:, -1]).logsumexp(dim=-1).sum()  # the table is fused with its gradient
    loss.backward()
    assert fused.text_projection.weight.grad is not None and fused.text_projection.weight.grad.abs().sum() > 0
    torch.optim.SGD(fused.parameters(), lr=1.0).step()
    fused.eval()
    stepped = fused.score_next(*seq)
    assert not torch.equal(stepped, first)
    torch.testing.assert_close(stepped, fresh_scores(), rtol=0, atol=0)
    fused.load_state_dict(SeqRecModel(**ARCH, item_text="fuse", text_dim=12).state_dict())
    torch.testing.assert_close(fused.score_next(*seq), fresh_scores(), rtol=0, atol=0)


def test_save_and_load_round_trip(model, tmp_path):
    save_model(model, tmp_path / "m", architecture=ARCH, provenance={"data_hash": "abc"})
    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert weights["item_embedding.weight"].shape == (31, 16)
    assert torch.count_nonzero(weights["item_embedding.weight"][0]) == 0  # padding row
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["architecture"] == ARCH and config["data_hash"] == "abc"
    loaded = load_model(tmp_path / "m")
    assert not loaded.training
    seq = one_per_basket([[0, 4, 5, 6]])
    torch.testing.assert_close(loaded.score_next(*seq), model.score_next(*seq), rtol=0, atol=0)


def test_load_model_names_the_missing_file(tmp_path):
    with pytest.raises(InputError, match="config.json.*recmoo train"):
        load_model(tmp_path)
