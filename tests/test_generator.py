"""The candidate generator: standardized blends, the choice on valid, and the same scores for a
user in the batch path and in a live session."""
import json

import numpy as np
import pytest
import torch

from recmoo_dag.baselines import ease_scorer, fit_ease, history_matrix
from recmoo_dag.errors import InputError
from recmoo_dag.features import load_features
from recmoo_dag.generator import (
    Generator,
    blend,
    choose_kind,
    compare,
    load_generator,
    save_generator,
    sequence_scores,
    standardized,
)
from recmoo_dag.model import SeqRecModel, save_model
from tests.model_support import tiny_project


def test_standardized_rows_have_mean_zero_and_unit_spread_over_real_items():
    scores = np.array([[-np.inf, 1.0, 2.0, 3.0], [0.0, 5.0, 5.0, 5.0]], dtype=np.float32)
    z = standardized(scores)
    assert np.isneginf(z[:, 0]).all()
    np.testing.assert_allclose(z[0, 1:], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)
    assert (z[1, 1:] == 0).all()  # a constant row (EASE without history) carries no preference
    other = np.array([[-np.inf, 3.0, 1.0, 2.0], [-np.inf, 1.0, 2.0, 3.0]], dtype=np.float32)
    mixed = blend(scores, other, 0.25)
    np.testing.assert_allclose(mixed[:, 1:], 0.25 * z[:, 1:] + 0.75 * standardized(other)[:, 1:], rtol=1e-6)


def test_the_choice_goes_to_the_best_valid_ndcg_and_ties_to_the_simpler():
    assert choose_kind({"model": 0.05, "ease": 0.07, "blend": 0.06}) == "ease"
    assert choose_kind({"model": 0.05, "ease": 0.05, "blend": 0.05}) == "model"
    assert choose_kind({"model": 0.05, "ease": 0.04, "blend": 0.051}) == "blend"


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """An untrained transformer on a tiny log: EASE beats it on valid by far."""
    root = tmp_path_factory.mktemp("generator")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        params = tiny_project(root)
        features = load_features(params.features.dir)
        torch.manual_seed(0)
        model = SeqRecModel(features.n_items, 16, 2, 1, 0.0, 20).eval()
    return root, params, features, model


def test_a_log_where_ease_wins_on_valid_gets_eases_candidates(untrained, monkeypatch):
    root, params, features, model = untrained
    monkeypatch.chdir(root)
    blank = SeqRecModel(features.n_items, 16, 2, 1, 0.0, 20).eval()
    for weights in blank.parameters():  # a transformer that scores every item alike: it cannot win
        weights.data.zero_()
    model = blank
    comparison, generator = compare(features, model, [10.0, 100.0], 64, k=10)
    assert comparison.generator == generator.kind == "ease"
    assert comparison.ease.valid.ndcg > comparison.model.valid.ndcg
    assert 0 < comparison.blend_weight < 1 and comparison.blend.test.k == 10
    # The candidates stage then ranks with EASE, fit on each context's own history.
    architecture = {"n_items": features.n_items, "d_model": 16, "n_heads": 2, "n_layers": 1, "dropout": 0.0,
                    "max_len": 20}
    save_model(model, params.train.model_dir, architecture, {})
    save_generator(params.train.model_dir, generator.kind, generator.ease_lambda, generator.blend_weight)
    from recmoo_dag.stages import candidates

    candidates.main(params)
    with np.load(params.candidates.path) as arrays:
        got = arrays["test_items"]
    indptr, items = features.history_before("test")
    x = history_matrix(indptr, items, features.n_items)
    scores = ease_scorer(x, fit_ease(indptr, items, features.n_items, generator.ease_lambda))(np.arange(3))
    scores[x[np.arange(3)].toarray() > 0] = -np.inf
    scores[:, 0] = -np.inf
    np.testing.assert_array_equal(got[:3, :5], np.argsort(-scores, axis=1, kind="stable")[:, :5])


@pytest.mark.parametrize("kind", ["model", "ease", "blend"])
def test_a_session_scores_like_the_batch_path(untrained, kind):
    """A live session (the service) and the batch scorer (candidates, deploy) agree for one user."""
    _, _, features, model = untrained
    indptr, items = features.history_before("test")
    ease = fit_ease(indptr, items, features.n_items, 30.0)
    generator = Generator(kind, model, 30.0, 0.4)
    batch = generator.scorer(indptr, items, ease)(np.arange(4))
    for user in range(4):
        sequence = items[indptr[user]:indptr[user + 1]]
        session = sequence_scores(generator, sequence, model.max_len, ease)
        np.testing.assert_allclose(session[1:], batch[user, 1:], rtol=1e-4, atol=1e-5)
        assert np.isneginf(session[0])


def test_a_missing_or_unknown_choice_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="re-run `recmoo train`"):
        load_generator(tmp_path)
    (tmp_path / "generator.json").write_text(json.dumps({"kind": "magic", "ease_lambda": 1, "blend_weight": 0}))
    with pytest.raises(InputError, match="'magic' is not one of"):
        load_generator(tmp_path)
