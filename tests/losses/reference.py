"""Slow, obviously-correct NumPy references for the retrieval losses (float64)."""

import numpy as np


def logsumexp(x):
    m = np.max(x)
    return m + np.log(np.sum(np.exp(x - m)))


def full_softmax(query, catalog, positive_ids, temperature, valid=None):
    """``logsumexp_{j valid}(c_j·q/τ) − c_pos·q/τ`` per query; ``valid`` [V] bool (None = all)."""
    keep = np.ones(len(catalog), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    out = []
    for q, p in zip(query, positive_ids):
        logits = catalog @ q / temperature
        out.append(logsumexp(logits[keep]) - logits[p])
    return np.array(out)


def sampled_softmax(query, positive, positive_ids, negatives, negative_ids, temperature,
                    pos_log_count=None, neg_log_count=None, remove_hits=True):
    out = []
    for b, q in enumerate(query):
        pos = q @ positive[b] / temperature - (0 if pos_log_count is None else pos_log_count[b])
        negs, ids = (negatives, negative_ids) if negatives.ndim == 2 else (negatives[b], negative_ids[b])
        counts = None if neg_log_count is None else (neg_log_count if neg_log_count.ndim == 1 else neg_log_count[b])
        logits = [pos]
        for k, n in enumerate(negs):
            if remove_hits and ids[k] == positive_ids[b]:
                continue
            logits.append(q @ n / temperature - (0 if counts is None else counts[k]))
        logits = np.array(logits)
        out.append(logsumexp(logits) - logits[0])
    return np.array(out)


def in_batch_softmax(query, candidates, candidate_ids, positive_index, temperature, log_count=None,
                     remove_duplicates=True):
    out = []
    for b, q in enumerate(query):
        p = positive_index[b]
        logits = []
        for j, c in enumerate(candidates):
            if remove_duplicates and j != p and candidate_ids[j] == candidate_ids[p]:
                continue
            value = q @ c / temperature - (0 if log_count is None else log_count[j])
            logits.append((j, value))
        values = np.array([v for _, v in logits])
        own = [v for j, v in logits if j == p][0]
        out.append(logsumexp(values) - own)
    return np.array(out)


def log_sigmoid(x):
    return -np.logaddexp(0, -x)


def bpr(pos, neg, keep):
    out = []
    for b in range(len(pos)):
        terms = [-log_sigmoid(pos[b] - neg[b, k]) for k in range(neg.shape[1]) if keep[b, k]]
        out.append(np.mean(terms) if terms else 0.0)
    return np.array(out)


def bce(pos, neg, keep):
    out = []
    for b in range(len(pos)):
        terms = [-log_sigmoid(pos[b])] + [-log_sigmoid(-neg[b, k]) for k in range(neg.shape[1]) if keep[b, k]]
        out.append(np.mean(terms))
    return np.array(out)


def numeric_gradient(function, x, eps=1e-6):
    """Central differences of scalar function(x) w.r.t. every entry of x."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = function(x)
        flat[i] = old - eps
        down = function(x)
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad
