"""Candidates: top-N unseen items per user and window, the npz contract, agreement with the model."""
import numpy as np
import pytest
import torch

from recmoo_dag.candidates import best_of, load_candidates, top_n
from recmoo_dag.errors import InputError
from recmoo_dag.evaluate import left_padded, seen_mask
from recmoo_dag.features import load_features
from recmoo_dag.generator import load_generator
from recmoo_dag.model import load_model
from recmoo_dag.stages import candidates as candidates_stage
from recmoo_dag.stages import train as train_stage
from recmoo_dag.windows import histories_of
from tests.model_support import tiny_project

pytestmark = pytest.mark.xdist_group("candidates")  # one trained model for the module


def test_top_n_sorts_excludes_seen_breaks_ties_by_index_and_pads():
    history = histories_of(np.array([0, 2, 5]), np.array([1, 2, 1, 2, 3]), np.ones(5, dtype=bool))
    scores = np.array([[9.0, 1.0, 5.0, 2.0, 2.0], [9.0, 8.0, 7.0, 6.0, 0.5]], dtype=np.float32)
    got_items, got_scores = top_n(lambda rows: scores[rows], history, n_items=4, n=3, batch_size=1)
    assert got_items.tolist() == [[3, 4, 0], [4, 0, 0]]  # tie 3/4 -> lower index first; padding after
    assert got_scores[0, :2].tolist() == [2.0, 2.0] and np.isneginf(got_scores[0, 2])
    assert got_scores[1, 0] == np.float32(0.5) and np.isneginf(got_scores[1, 1:]).all()
    wide_items, _ = top_n(lambda rows: scores[rows], history, n_items=4, n=6, batch_size=2)
    assert wide_items.shape == (2, 6)  # N beyond the catalog: the shape still follows candidates.n


def test_best_of_is_the_one_ranking_rule():
    scores = np.array([[-np.inf, 0.5, 2.0, 2.0, -np.inf, 1.0]], dtype=np.float32)
    items, best = best_of(scores, 4)
    assert items.tolist() == [[2, 3, 5, 1]] and best.tolist() == [[2.0, 2.0, 1.0, 0.5]]
    items, best = best_of(scores, 9)  # more than the catalog: the rest is padding at -inf
    assert items.tolist() == [[2, 3, 5, 1, 0]] and np.isneginf(best[0, 4])


def test_a_missing_or_partial_candidates_file_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="run `recmoo candidates`"):
        load_candidates(tmp_path / "none.npz")
    np.savez(tmp_path / "partial.npz", valid_items=np.zeros((2, 3), dtype=np.int32))
    with pytest.raises(InputError, match=r"missing arrays \['test_items'"):
        load_candidates(tmp_path / "partial.npz")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("candidates")
    with pytest.MonkeyPatch.context() as patch:  # the stages read and write paths relative to the project
        patch.chdir(root)
        params = tiny_project(root, {"train": {"max_steps": 20}})
        train_stage.main(params)
        candidates_stage.main(params)
    return root, params


def test_candidates_file_contract(trained):
    root, params = trained
    arrays = load_candidates(root / params.candidates.path)
    features = load_features(root / params.features.dir)
    n = params.candidates.n
    for window in ("valid", "test"):
        cases = features.cases(window)
        assert arrays[f"{window}_items"].shape == (cases.n_cases, n) and arrays[f"{window}_items"].dtype == np.int32
        assert arrays[f"{window}_scores"].shape == (cases.n_cases, n)
        assert arrays[f"{window}_scores"].dtype == np.float32
        assert arrays[f"{window}_targets"].dtype == np.int32
        assert np.all(np.diff(arrays[f"{window}_scores"], axis=1) <= 0)  # best first
        assert np.all((arrays[f"{window}_items"] >= 1) & (arrays[f"{window}_items"] <= features.n_items))
        np.testing.assert_array_equal(arrays[f"{window}_users"], cases.users)
        np.testing.assert_array_equal(arrays[f"{window}_target_indptr"], cases.target_indptr)
        np.testing.assert_array_equal(arrays[f"{window}_targets"], cases.targets)
    with np.load(root / params.candidates.path, allow_pickle=False) as archive:  # plain arrays only
        assert sorted(archive.files) == sorted(arrays)


def test_candidates_exclude_each_cases_history_and_follow_the_model(trained):
    root, params = trained
    arrays = load_candidates(root / params.candidates.path)
    features = load_features(root / params.features.dir)
    for window in ("valid", "test"):
        cases = features.cases(window)
        seen = seen_mask(cases.history, np.arange(cases.n_cases), features.n_items)
        assert not np.take_along_axis(seen, arrays[f"{window}_items"].astype(np.int64), axis=1).any()
    # Scores are the chosen generator's: re-scoring with it reproduces them (the transformer's own
    # forward pass when the transformer was chosen).
    generator = load_generator(root / params.train.model_dir)
    cases = features.cases("test")
    rows = np.arange(cases.n_cases)
    scores = generator.scorer(features.history_before("test"), cases.history)(rows)
    if generator.kind == "model":
        model = load_model(root / params.train.model_dir)
        seq, baskets = left_padded(cases.history, rows, model.max_len)
        scores = model.score_next(torch.from_numpy(seq), torch.from_numpy(baskets)).numpy()
    np.testing.assert_allclose(np.take_along_axis(scores, arrays["test_items"].astype(np.int64), axis=1),
                               arrays["test_scores"], rtol=1e-5, atol=1e-5)
    hit = (arrays["test_items"][cases.target_rows] == cases.targets[:, None]).any(axis=1)  # (T,)
    assert np.bincount(cases.target_rows, hit, cases.n_cases).astype(bool).mean() > 0.2
