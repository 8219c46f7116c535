"""Servable building blocks against NumPy references: history packing, id lookups, and the
exclusion signature over both index kinds (the top-k maths itself: tests/test_topk.py)."""

import numpy as np
import pytest

from tfsoft.backend import tf
from tfsoft.errors import ExportError
from tfsoft.export.index import BruteForceIndex, ScannIndex, ScannParams
from tfsoft.export.servable import PAD_ID, IdLookup, RetrievalServable, pack_history, write_id_file
from tfsoft.topk import LOWEST_SCORE


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


def servable_over(index, user_vectors, items, tmp_path, k):
    """A servable with precomputed user vectors (no tower) over raw ids 100, 101, ... and 7000, 7001, ..."""
    users = write_id_file(tmp_path / "users.txt", [100 + i for i in range(len(user_vectors) - 1)], "int64")
    item_file = write_id_file(tmp_path / "items.txt", [7000 + i for i in range(len(items) - 1)], "int64")
    return RetrievalServable(query_tower=None, user_embeddings=user_vectors, index=index, candidate_embeddings=items,
                             users=IdLookup(users, "int64", name="users"),
                             items=IdLookup(item_file, "int64", name="items"),
                             inputs=("user_id",), max_history=5, k=k, score_similarity="dot")


@pytest.mark.parametrize("kind", ["brute_force", "scann"])
def test_top_k_excluding_signature_matches_numpy_for_both_indexes(kind, tmp_path):
    rng = np.random.default_rng(3)
    items = rng.normal(size=(36, 8)).astype(np.float32)  # 35 items + OOV row
    user_vectors = rng.normal(size=(7, 8)).astype(np.float32)
    index = (BruteForceIndex(items) if kind == "brute_force" else  # ScaNN searching exhaustively: exact
             ScannIndex(items, k=12, params=ScannParams(num_leaves=1, reorder_num_neighbors=35)))
    signatures = servable_over(index, user_vectors, items, tmp_path, k=12).signatures()
    users = np.array([100, 103, 105, 999, 101], np.int64)  # 999 is unknown: the OOV user vector
    exclude = 7000 + np.stack([rng.permutation(np.arange(-2, 40))[:30] for _ in users])  # ids 6998.., 7035.. unknown
    exclude[0, :3] = PAD_ID["int64"]
    got = signatures["top_k_excluding"](user_id=tf.constant(users), exclude_item_ids=tf.constant(exclude))

    scores = user_vectors[[1, 4, 6, 0, 2]] @ items.T
    scores[:, 0] = -np.inf
    for row, banned in enumerate(exclude - 7000 + 1):  # raw id 7000 + i has index i + 1
        scores[row, banned[(banned > 0) & (banned < 36)]] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :12]
    allowed = np.isfinite(np.take_along_axis(scores, order, axis=1))
    assert not allowed.all()  # some rows have fewer than k items left
    want_ids = np.where(allowed, order - 1 + 7000, PAD_ID["int64"])
    np.testing.assert_array_equal(got["item_ids"].numpy(), want_ids)
    np.testing.assert_array_equal(got["scores"].numpy() == LOWEST_SCORE, ~allowed)
    np.testing.assert_allclose(got["scores"].numpy()[allowed], np.take_along_axis(scores, order, axis=1)[allowed],
                               rtol=1e-4, atol=1e-4)
    plain = signatures["serving_default"](user_id=tf.constant(users))  # no exclusion: every slot filled
    unmasked = user_vectors[[1, 4, 6, 0, 2]] @ items.T
    unmasked[:, 0] = -np.inf
    np.testing.assert_array_equal(plain["item_ids"].numpy(),
                                  np.argsort(-unmasked, axis=1, kind="stable")[:, :12] - 1 + 7000)


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
