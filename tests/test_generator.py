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
from recmoo_dag.results import Accuracy, Evaluation
from recmoo_dag.uncertainty import Bootstrap
from tests.conftest import section
from tests.model_support import tiny_project

EVALUATION = section("evaluation", replicates=200)


def test_standardized_rows_have_mean_zero_and_unit_spread_over_real_items():
    scores = np.array([[-np.inf, 1.0, 2.0, 3.0], [0.0, 5.0, 5.0, 5.0]], dtype=np.float32)
    z = standardized(scores)
    assert np.isneginf(z[:, 0]).all()
    np.testing.assert_allclose(z[0, 1:], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)
    assert (z[1, 1:] == 0).all()  # a constant row (EASE without history) carries no preference
    other = np.array([[-np.inf, 3.0, 1.0, 2.0], [-np.inf, 1.0, 2.0, 3.0]], dtype=np.float32)
    mixed = blend(scores, other, 0.25)
    np.testing.assert_allclose(mixed[:, 1:], 0.25 * z[:, 1:] + 0.75 * standardized(other)[:, 1:], rtol=1e-6)


def scored(user_ndcg: np.ndarray) -> Evaluation:
    """An Evaluation whose valid window has these per-user NDCGs (the test window is not looked at)."""
    values = dict.fromkeys(("ndcg", "hr", "recall", "mrr"), float(user_ndcg.mean()))
    accuracy = Accuracy(10, values, dict.fromkeys(values, (0.0, 1.0)), values["ndcg"], len(user_ndcg),
                        len(user_ndcg), user_ndcg)
    return Evaluation(accuracy, accuracy)


def test_the_choice_is_a_test_against_ease_and_a_tie_goes_to_the_simpler():
    rng = np.random.default_rng(0)
    ease = rng.random(400) * (rng.random(400) < 0.3)  # (U,) per-user NDCG, many users at 0
    boot = Bootstrap(400, 1000, seed=0)
    clear = ease * 1.2 + 0.01  # better for every user
    noisy = ease.copy()
    noisy[0] += 8.0  # higher on average, through one user only: not shown to be better
    assert choose_kind(scored(clear), scored(ease), scored(ease * 0.9), boot, 0.95) == "model"
    assert choose_kind(scored(noisy), scored(ease), scored(ease * 0.9), boot, 0.95) == "ease"
    assert choose_kind(scored(clear), scored(ease), scored(clear * 1.1), boot, 0.95) == "blend"  # both win: the better
    assert choose_kind(scored(clear), scored(ease), scored(clear), boot, 0.95) == "model"  # a tie: the simpler


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
    comparison, generator = compare(features, model, [10.0, 100.0], 64, k=10, evaluation=EVALUATION, seed=0)
    assert comparison.generator == generator.kind == "ease"
    assert comparison.ease.valid.ndcg > comparison.model.valid.ndcg
    ratio, (low, high) = comparison.vs_ease["model"]["valid"]
    assert low <= ratio <= high < 1.0  # the transformer is worse, and shown to be
    assert 0 < comparison.blend_weight < 1 and comparison.blend.test.k == 10
    # The candidates stage then ranks with EASE, fit on the events before test, scoring each test
    # basket from its own history.
    architecture = {"n_items": features.n_items, "d_model": 16, "n_heads": 2, "n_layers": 1, "dropout": 0.0,
                    "max_len": 20}
    save_model(model, params.train.model_dir, architecture, {})
    save_generator(params.train.model_dir, generator.kind, generator.ease_lambda, generator.blend_weight)
    from recmoo_dag.stages import candidates

    candidates.main(params)
    with np.load(params.candidates.path) as arrays:
        got = arrays["test_items"]
    cases = features.cases("test")
    rows = np.arange(3)
    weights = fit_ease(features.history_before("test"), features.n_items, generator.ease_lambda)
    scores = ease_scorer(cases.history, weights, features.n_items)(rows)
    scores[history_matrix(cases.history, features.n_items)[rows].toarray() > 0] = -np.inf
    scores[:, 0] = -np.inf
    np.testing.assert_array_equal(got[:3, :5], np.argsort(-scores, axis=1, kind="stable")[:, :5])


@pytest.mark.parametrize("kind", ["model", "ease", "blend"])
def test_a_session_scores_like_the_batch_path(untrained, kind):
    """A live session (the service) and the batch scorer (candidates, deploy) agree for one user."""
    _, _, features, model = untrained
    history = features.history_before("test")
    ease = fit_ease(history, features.n_items, 30.0)
    generator = Generator(kind, model, 30.0, 0.4)
    batch = generator.scorer(history, history, ease)(np.arange(4))
    opens = history.basket_starts == np.arange(len(history.items))
    for user in range(4):
        span = slice(history.starts[user], history.ends[user])
        session = sequence_scores(generator, history.items[span], opens[span], model.max_len, ease)
        np.testing.assert_allclose(session[1:], batch[user, 1:], rtol=1e-4, atol=1e-5)
        assert np.isneginf(session[0])


def test_a_missing_or_unknown_choice_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="re-run `recmoo train`"):
        load_generator(tmp_path)
    (tmp_path / "generator.json").write_text(json.dumps({"kind": "magic", "ease_lambda": 1, "blend_weight": 0}))
    with pytest.raises(InputError, match="'magic' is not one of"):
        load_generator(tmp_path)
