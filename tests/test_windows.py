"""The evaluation protocol: baskets, the three window protocols and the cases judged in a window."""
import numpy as np
import pytest

from recmoo_dag.errors import FeaturesError
from recmoo_dag.windows import (
    TEST,
    TRAIN,
    VALID,
    assign_windows,
    basket_bounds,
    check_window,
    histories_of,
    sample_users,
    window_cases,
)

# Two users, events sorted by user then time; user 0 has baskets {1}, {2, 3}, {4}, {5, 6}, {7}, {8};
# user 1 has {1}, {2}, {3, 1} (item 1 again: a repeat, never a target) and {4}.
USERS = np.array([0] * 8 + [1] * 5)
TIMES = np.array([10, 20, 20, 30, 40, 40, 50, 60, 5, 6, 7, 7, 8])
ITEMS = np.array([1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 1, 4], dtype=np.int32)
INDPTR = np.array([0, 8, 13])


def test_baskets_are_the_events_of_one_user_and_one_timestamp():
    starts, ends = basket_bounds(USERS, TIMES)
    assert starts.tolist() == [0, 1, 1, 3, 4, 4, 6, 7, 8, 9, 10, 10, 12]
    assert ends.tolist() == [1, 3, 3, 4, 6, 6, 7, 8, 9, 10, 12, 12, 13]


def test_leave_one_out_holds_out_the_last_basket_and_the_one_before():
    windows = assign_windows(USERS, TIMES, "leave_one_out", 0.8, 0.9, 0.2, 10)
    assert windows[:8].tolist() == [TRAIN, TRAIN, TRAIN, TRAIN, TRAIN, TRAIN, VALID, TEST]
    assert windows[8:].tolist() == [TRAIN, TRAIN, VALID, VALID, TEST]


def test_user_tail_holds_out_a_share_of_each_users_baskets_leaving_one_to_train():
    # user 0 has 6 baskets: ceil(0.3 * 6) = 2 per window; user 1 has 4: 2 per window would leave none
    # to train on, so 1
    windows = assign_windows(USERS, TIMES, "user_tail", 0.8, 0.9, 0.3, 10)
    assert windows[:8].tolist() == [TRAIN, TRAIN, TRAIN, VALID, VALID, VALID, TEST, TEST]
    assert windows[8:].tolist() == [TRAIN, TRAIN, VALID, VALID, TEST]
    capped = assign_windows(USERS, TIMES, "user_tail", 0.8, 0.9, 0.3, 1)  # tail_max_baskets
    assert capped[:8].tolist() == [TRAIN] * 6 + [VALID, TEST]


def test_global_time_cuts_the_timeline_so_nothing_trains_past_a_window():
    windows = assign_windows(USERS, TIMES, "global_time", 0.5, 0.8, 0.2, 10)
    valid_cut, test_cut = np.quantile(TIMES, [0.5, 0.8], method="lower")
    assert (windows[TIMES < valid_cut] == TRAIN).all() and (windows[TIMES >= test_cut] == TEST).all()
    # a basket never straddles a cutoff: its events share a timestamp
    starts, _ = basket_bounds(USERS, TIMES)
    assert all(windows[i] == windows[starts[i]] for i in range(len(TIMES)))


def test_cases_are_predicted_successively_from_everything_before_them():
    windows = np.array([TRAIN, TRAIN, TRAIN, VALID, TEST, TEST, TEST, TEST, TRAIN, TRAIN, TEST, TEST, TEST], np.int8)
    starts, ends = basket_bounds(USERS, TIMES)
    cases = window_cases("test", INDPTR, ITEMS, windows, starts, ends, n_items=8)
    # user 0: baskets {5, 6}, {7}, {8}; user 1: {3, 1} (1 seen before: only 3 is relevant), {4}
    assert cases.users.tolist() == [0, 0, 0, 1, 1]
    relevant = [cases.targets[a:b].tolist() for a, b in zip(cases.target_indptr[:-1], cases.target_indptr[1:])]
    assert relevant == [[5, 6], [7], [8], [3], [4]]
    histories = [ITEMS[s:e].tolist() for s, e in zip(cases.history.starts, cases.history.ends)]
    assert histories[0] == [1, 2, 3, 4] and histories[1] == [1, 2, 3, 4, 5, 6]  # the earlier test basket too
    assert histories[3] == [1, 2]
    picked = cases.subset(np.array([1, 3]))
    assert picked.targets.tolist() == [7, 3] and picked.target_indptr.tolist() == [0, 1, 2]


def test_a_basket_of_items_all_seen_before_is_no_case_and_new_users_are_not_judged():
    users, times = np.array([0, 0, 0, 1]), np.array([1, 2, 3, 3])
    items = np.array([1, 2, 1, 2], dtype=np.int32)  # user 0's last basket repeats item 1; user 1 is new in test
    windows = np.array([TRAIN, TRAIN, TEST, TEST], np.int8)
    starts, ends = basket_bounds(users, times)
    cases = window_cases("test", np.array([0, 3, 4]), items, windows, starts, ends, n_items=2)
    assert cases.n_cases == 0


def test_a_window_with_too_few_users_is_a_clear_error():
    windows = assign_windows(USERS, TIMES, "leave_one_out", 0.8, 0.9, 0.2, 10)
    starts, ends = basket_bounds(USERS, TIMES)
    cases = window_cases("valid", INDPTR, ITEMS, windows, starts, ends, n_items=8)
    with pytest.raises(FeaturesError, match="the valid window holds 2 users.*min_window_users: 3"):
        check_window(cases, 3, "leave_one_out")


def test_histories_from_basket_starts_as_a_bundle_stores_them():
    history = histories_of(np.array([0, 3, 5]), np.array([1, 2, 3, 4, 5]), np.array([True, False, True, False, True]))
    assert history.basket_starts.tolist() == [0, 0, 2, 3, 4] and history.basket_ends.tolist() == [2, 2, 3, 4, 5]
    assert history.lengths.tolist() == [3, 2]


def test_the_user_sample_is_seeded_and_stratified_by_activity():
    activity = np.arange(1000)  # user u has u events: deciles are contiguous blocks of 100
    sample = sample_users(activity, 100, 5)
    assert len(sample) == 100 and np.all(np.diff(sample) > 0)
    assert np.bincount(sample // 100, minlength=10).tolist() == [10] * 10  # every decile in proportion
    np.testing.assert_array_equal(sample, sample_users(activity, 100, 5))
    assert not np.array_equal(sample, sample_users(activity, 100, 6))
    np.testing.assert_array_equal(sample_users(activity, None, 5), np.arange(1000))
    np.testing.assert_array_equal(sample_users(activity, 5000, 5), np.arange(1000))
