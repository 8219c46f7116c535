"""Servable building blocks against NumPy references: history packing, exclusion, id lookups."""

import numpy as np
import pytest

from tfsoft.backend import tf
from tfsoft.errors import ExportError
from tfsoft.export.servable import LOWEST_SCORE, IdLookup, drop_excluded, pack_history, write_id_file


def reference_pack(rows, max_history):
    out = np.zeros((len(rows), max_history), np.int64)
    for i, row in enumerate(rows):
        kept = [x for x in row if x > 0][-max_history:]
        if kept:
            out[i, max_history - len(kept):] = kept
    return out


def test_pack_history_drops_padding_anywhere_keeps_the_most_recent_and_left_pads():
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 4, size=(20, 9)) * rng.integers(1, 50, size=(20, 9))  # zeros scattered anywhere
    for max_history in (3, 9, 12):
        np.testing.assert_array_equal(pack_history(tf.constant(rows), max_history).numpy(),
                                      reference_pack(rows, max_history))


def reference_drop(indices, scores, excluded, k):
    out_i, out_s = [], []
    for row_i, row_s, row_x in zip(indices, scores, excluded):
        kept = [(s, i) for i, s in zip(row_i, row_s) if i > 0 and i not in set(row_x)]
        kept.sort(key=lambda pair: -pair[0])
        kept = kept[:k] + [(LOWEST_SCORE, 0)] * (k - len(kept[:k]))
        out_i.append([i for _, i in kept])
        out_s.append([s for s, _ in kept])
    return np.array(out_i), np.array(out_s, np.float32)


def test_drop_excluded_matches_numpy_and_pads_when_too_few_remain():
    rng = np.random.default_rng(1)
    indices = np.stack([rng.permutation(np.arange(1, 13)) for _ in range(6)])
    scores = np.sort(rng.normal(size=(6, 12)).astype(np.float32), axis=1)[:, ::-1].copy()
    indices[2, 4] = 0  # an invalid slot of the index
    excluded = rng.integers(0, 13, size=(6, 5))
    excluded[5] = indices[5, :5]  # the top 5 excluded
    got_i, got_s = drop_excluded(tf.constant(indices), tf.constant(scores), tf.constant(excluded), 4)
    want_i, want_s = reference_drop(indices, scores, excluded, 4)
    np.testing.assert_array_equal(got_i.numpy(), want_i)
    np.testing.assert_allclose(got_s.numpy(), want_s)
    got_i, got_s = drop_excluded(tf.constant(indices[:, :3]), tf.constant(scores[:, :3]),
                                 tf.constant(indices[:, :2]), 3)  # 2 of 3 excluded: 2 padding slots
    assert (got_i.numpy()[:, 1:] == 0).all() and (got_s.numpy()[:, 1:] == LOWEST_SCORE).all()


@pytest.mark.parametrize("tokens, dtype, unknown", [([7, 3, -2, 10**12], "int64", 99),
                                                    (["a", "b c", "é", "x\ty"], "string", "zz")])
def test_id_lookup_round_trips_and_maps_unknown_ids_to_oov(tmp_path, tokens, dtype, unknown):
    lookup = IdLookup(write_id_file(tmp_path / "ids.txt", tokens, dtype), dtype, name="ids")
    raw = tf.constant(tokens + [unknown])
    indices = lookup.to_index(raw).numpy()
    np.testing.assert_array_equal(indices, [1, 2, 3, 4, 0])
    back = lookup.to_id(tf.constant([4, 1, 0, 77], tf.int64)).numpy().tolist()
    if dtype == "string":
        back = [item.decode() for item in back]
    assert back == [tokens[3], tokens[0], lookup.pad, lookup.pad]


def test_ids_that_cannot_be_written_one_per_line_are_refused(tmp_path):
    with pytest.raises(ExportError, match=r"raw id 'a\\nb' \(vocabulary row 2\)"):
        write_id_file(tmp_path / "ids.txt", ["ok", "a\nb"], "string")
