import numpy as np
import pytest

from tfsoft.errors import ConfigError
from tfsoft.sampling import (
    log_uniform_proposal,
    make_proposal,
    uniform_proposal,
    unigram_proposal,
)

COUNTS = np.array([0, 3, 1, 0, 4])


def check_distribution(q, num_indices):
    assert q.dtype == np.float64
    assert q.shape == (num_indices,)
    assert q[0] == 0.0
    assert np.all(q >= 0)
    np.testing.assert_allclose(q.sum(), 1.0, rtol=0, atol=1e-12)


def test_uniform_is_one_over_n_on_real_items():
    q = uniform_proposal(5)
    check_distribution(q, 5)
    np.testing.assert_array_equal(q, [0, 0.25, 0.25, 0.25, 0.25])


def test_unigram_beta_one_is_proportional_to_counts():
    q = unigram_proposal(COUNTS, beta=1.0)
    check_distribution(q, 5)
    np.testing.assert_allclose(q, [0, 3 / 8, 1 / 8, 0, 4 / 8], rtol=1e-15)


def test_unigram_beta_zero_is_uniform_over_all_real_items_including_unseen():
    np.testing.assert_array_equal(unigram_proposal(COUNTS, beta=0.0), uniform_proposal(5))
    np.testing.assert_array_equal(unigram_proposal(COUNTS, beta=0), uniform_proposal(5))


def test_unigram_fractional_beta_matches_power_formula():
    q = unigram_proposal(COUNTS, beta=0.5)
    check_distribution(q, 5)
    weights = np.array([0, np.sqrt(3), 1, 0, 2])
    np.testing.assert_allclose(q, weights / weights.sum(), rtol=1e-15)


def test_unigram_smoothing_is_a_pseudo_count_on_every_real_item():
    q = unigram_proposal(COUNTS, beta=1.0, smoothing=1.0)
    check_distribution(q, 5)
    np.testing.assert_allclose(q, [0, 4 / 12, 2 / 12, 1 / 12, 5 / 12], rtol=1e-15)
    weights = np.array([0, 3.5, 1.5, 0.5, 4.5]) ** 0.7
    np.testing.assert_allclose(unigram_proposal(COUNTS, beta=0.7, smoothing=0.5), weights / weights.sum(), rtol=1e-14)


def test_unigram_ignores_count_of_index_zero_and_accepts_float_counts():
    q = unigram_proposal(np.array([7.0, 1.0, 1.0]), beta=1.0)
    np.testing.assert_array_equal(q, [0, 0.5, 0.5])


def test_log_uniform_hand_values_and_tf_formula_shifted_by_one():
    q = log_uniform_proposal(4)  # n = 3
    check_distribution(q, 4)
    np.testing.assert_allclose(q[1:], [np.log(2) / np.log(4), np.log(1.5) / np.log(4), np.log(4 / 3) / np.log(4)])
    n = 999
    q = log_uniform_proposal(n + 1)
    check_distribution(q, n + 1)
    tf_classes = np.arange(n)  # TF: P(c) = (log(c + 2) - log(c + 1)) / log(range_max + 1), c = 0..n-1
    tf_probs = (np.log(tf_classes + 2) - np.log(tf_classes + 1)) / np.log(n + 1)
    np.testing.assert_allclose(q[1:], tf_probs, rtol=1e-12)
    assert np.all(np.diff(q[1:]) < 0)  # most popular (index 1) first


def test_make_proposal_dispatches():
    np.testing.assert_array_equal(make_proposal("uniform", num_indices=5), uniform_proposal(5))
    np.testing.assert_array_equal(make_proposal("log_uniform", num_indices=5), log_uniform_proposal(5))
    np.testing.assert_array_equal(
        make_proposal("unigram", num_indices=5, item_counts=COUNTS, beta=0.5), unigram_proposal(COUNTS, beta=0.5)
    )
    np.testing.assert_array_equal(
        make_proposal("unigram", num_indices=5, item_counts=COUNTS, smoothing=2.0),
        unigram_proposal(COUNTS, smoothing=2.0),
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: make_proposal("popularity", num_indices=5), r"proposal must be one of .*got 'popularity'"),
        (lambda: make_proposal("unigram", num_indices=5), r"needs item_counts.*got None"),
        (lambda: make_proposal("unigram", num_indices=6, item_counts=COUNTS), r"length num_indices=6.*got length 5"),
        (lambda: unigram_proposal(COUNTS, beta=1.5), r"beta must be .*\[0, 1\].*got 1.5"),
        (lambda: unigram_proposal(COUNTS, beta=-0.1), r"beta must be .*got -0.1"),
        (
            lambda: unigram_proposal(np.array([0, 2, -1]), beta=1.0),
            r"item_counts must be >= 0; got item_counts\[2\] = -1",
        ),
        (lambda: unigram_proposal(np.zeros((2, 3))), r"1-D.*got shape \(2, 3\)"),
        (lambda: unigram_proposal(np.array([0, 0, 0]), beta=1.0), r"count \+ smoothing > 0"),
        (lambda: unigram_proposal(COUNTS, smoothing=-1.0), r"smoothing must be .*got -1.0"),
        (lambda: uniform_proposal(1), r"num_indices must be an int >= 2.*got 1"),
        (lambda: log_uniform_proposal(2.5), r"num_indices must be an int >= 2.*got 2.5"),
    ],
)
def test_bad_arguments_raise_config_error(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


def test_all_zero_counts_with_beta_zero_is_uniform():
    np.testing.assert_array_equal(unigram_proposal(np.zeros(4, dtype=int), beta=0.0), uniform_proposal(4))
