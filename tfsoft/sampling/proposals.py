"""Proposal distributions Q over item indices for sampled softmax negatives.

Every function returns a float64 NumPy vector ``Q`` of length ``num_indices`` with
``Q[0] == 0`` (index 0 is the OOV/padding row and is never sampled) and ``Q.sum() == 1``.
Real items are indices ``1..n`` (``n = num_indices − 1``), ordered by training frequency,
most popular first, which is what the log-uniform (Zipf) proposal assumes.

Example::

    >>> q = unigram_proposal(np.array([0, 3, 1]), beta=1.0)
    >>> q.tolist()
    [0.0, 0.75, 0.25]
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from tfsoft.errors import ConfigError

ProposalName = Literal["uniform", "unigram", "log_uniform"]
PROPOSALS: tuple[str, ...] = ("uniform", "unigram", "log_uniform")


def _check_num_indices(num_indices: int) -> int:
    if isinstance(num_indices, bool) or not isinstance(num_indices, (int, np.integer)) or num_indices < 2:
        raise ConfigError(
            f"num_indices must be an int >= 2 (index 0 is OOV/padding, items are 1..n); got {num_indices!r}"
        )
    return int(num_indices)


def _check_counts(item_counts, num_indices: int | None = None) -> np.ndarray:
    counts = np.asarray(item_counts)
    if counts.ndim != 1:
        raise ConfigError(f"item_counts must be a 1-D array [num_indices]; got shape {counts.shape}")
    if not (np.issubdtype(counts.dtype, np.integer) or np.issubdtype(counts.dtype, np.floating)):
        raise ConfigError(f"item_counts must be numeric; got dtype {counts.dtype}")
    counts = counts.astype(np.float64)
    if num_indices is not None and counts.shape[0] != num_indices:
        raise ConfigError(
            f"item_counts must have length num_indices={num_indices} (index 0 = OOV/padding); "
            f"got length {counts.shape[0]}"
        )
    if counts.shape[0] < 2:
        raise ConfigError(
            f"item_counts must have length >= 2 (index 0 = OOV/padding, then items); got length {counts.shape[0]}"
        )
    if not np.all(np.isfinite(counts)):
        raise ConfigError("item_counts must be finite; got NaN or inf")
    if np.any(counts < 0):
        bad = int(np.flatnonzero(counts < 0)[0])
        raise ConfigError(f"item_counts must be >= 0; got item_counts[{bad}] = {counts[bad]}")
    return counts


def uniform_proposal(num_indices: int) -> np.ndarray:
    """Uniform proposal over the real items: ``Q(j) = 1/n`` for ``j ≥ 1``, ``Q(0) = 0``.

    Args:
        num_indices: n + 1 (the OOV/padding row included).
    Returns:
        [num_indices] float64.
    """
    num_indices = _check_num_indices(num_indices)
    q = np.full(num_indices, 1.0 / (num_indices - 1), dtype=np.float64)
    q[0] = 0.0
    return q


def unigram_proposal(item_counts, beta: float = 1.0, smoothing: float = 0.0) -> np.ndarray:
    """Smoothed unigram proposal ``Q(j) ∝ (count_j + smoothing)^β`` for ``j ≥ 1`` (SSM paper §4.4.2).

    ``β = 1`` is the popularity (unigram) proposal, ``β = 0`` the uniform one over **all** real
    items, zero-count items included (``0^0`` is taken as 1), values between flatten the
    popularity curve. For ``β > 0`` an item with ``count + smoothing == 0`` gets ``Q = 0`` and is
    never sampled; ``smoothing > 0`` (a pseudo-count added to every real item) avoids that.
    ``item_counts[0]`` is ignored: index 0 (OOV/padding) always gets ``Q(0) = 0``.

    Args:
        item_counts: [num_indices] non-negative counts (int or float); item_counts[0] is ignored.
        beta: exponent β in [0, 1].
        smoothing: pseudo-count >= 0 added to every real item's count before the power.
    Returns:
        [num_indices] float64.
    """
    counts = _check_counts(item_counts)
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.integer, np.floating)) or not 0.0 <= beta <= 1.0:
        raise ConfigError(f"beta must be a number in [0, 1] (SSM §4.4.2); got {beta!r}")
    if (
        isinstance(smoothing, bool)
        or not isinstance(smoothing, (int, float, np.integer, np.floating))
        or not np.isfinite(smoothing)
        or smoothing < 0
    ):
        raise ConfigError(f"smoothing must be a finite number >= 0; got {smoothing!r}")
    real = counts[1:] + float(smoothing)
    if beta == 0:
        weights = np.ones_like(real)
    else:
        weights = np.power(real, float(beta))
    total = weights.sum()
    if total <= 0:
        raise ConfigError(
            "unigram proposal needs at least one real item (index >= 1) with count + smoothing > 0; "
            f"got all {real.shape[0]} real items at 0 (set smoothing > 0 or beta = 0)"
        )
    q = np.zeros(counts.shape[0], dtype=np.float64)
    q[1:] = weights / total
    return q


def log_uniform_proposal(num_indices: int) -> np.ndarray:
    """Log-uniform (Zipf) proposal over real items by rank ``r = j``.

    ``Q(j) = (log(j + 1) − log(j)) / log(n + 1)`` for ``j = 1..n``, ``Q(0) = 0``: TensorFlow's
    ``tf.random.log_uniform_candidate_sampler`` distribution (Jean et al. 2015) shifted by one
    so that index 0 is excluded. Assumes items are sorted by frequency, most popular first.

    Args:
        num_indices: n + 1 (the OOV/padding row included).
    Returns:
        [num_indices] float64.
    """
    num_indices = _check_num_indices(num_indices)
    n = num_indices - 1
    ranks = np.arange(1, n + 1, dtype=np.float64)
    q = np.zeros(num_indices, dtype=np.float64)
    q[1:] = np.log1p(1.0 / ranks) / np.log(n + 1.0)
    q[1:] /= q[1:].sum()  # telescopes to 1 already; removes rounding drift
    return q


def make_proposal(
    name: str,
    *,
    num_indices: int,
    item_counts=None,
    beta: float = 1.0,
    smoothing: float = 0.0,
) -> np.ndarray:
    """The proposal called ``name`` ("uniform", "unigram" or "log_uniform") as a [num_indices] vector.

    Args:
        name: which proposal.
        num_indices: n + 1 (the OOV/padding row included).
        item_counts: [num_indices] counts; required for "unigram", ignored otherwise.
        beta: unigram exponent in [0, 1].
        smoothing: unigram pseudo-count.
    Returns:
        [num_indices] float64, ``Q[0] = 0``, sums to 1.
    """
    if name not in PROPOSALS:
        raise ConfigError(f"proposal must be one of {', '.join(PROPOSALS)}; got {name!r}")
    num_indices = _check_num_indices(num_indices)
    if name == "uniform":
        return uniform_proposal(num_indices)
    if name == "log_uniform":
        return log_uniform_proposal(num_indices)
    if item_counts is None:
        raise ConfigError("proposal 'unigram' needs item_counts ([num_indices] training counts); got None")
    counts = _check_counts(item_counts, num_indices)
    return unigram_proposal(counts, beta=beta, smoothing=smoothing)
