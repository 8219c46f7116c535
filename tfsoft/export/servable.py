"""The exported retrieval model: raw request features in, top-k raw item ids out.

A :class:`RetrievalServable` is the ``tf.Module`` that ``tfsoft export`` saves. It holds the
query encoder, the id vocabularies (as lookup tables initialised from ``assets/`` text
files), and a retrieval index over the candidate embeddings, and exposes four signatures::

    serving_default    query inputs                     -> item_ids [B, k], scores [B, k]
    top_k_excluding    query inputs + exclude_item_ids  -> item_ids [B, k], scores [B, k]
    query_embedding    query inputs                     -> embedding [B, d]
    candidate_embedding  item_ids [B]                   -> embedding [B, d], known [B]

Query inputs are those the query tower reads: ``user_id`` [B] (raw user ids) and/or
``history`` [B, H] (raw item ids, oldest first). Raw ids are int64 or string, as in the
training data. Ids not in the vocabulary map to the OOV index and never raise: an unknown
user gets the OOV embedding, unknown history items are dropped. Any id that is not in the
vocabulary therefore also works as padding, on either side; the history is re-packed to the
model's left-padded, most-recent-last layout and cut to its ``max_history`` last items.

``exclude_item_ids`` [B, E] removes items from each row's results (e.g. already seen ones):
the brute-force index masks them in its score matrix (:func:`tfsoft.topk.exact_top_k`); a
ScaNN index is asked for ``k + E`` results, excluded ones are dropped and the best ``k`` kept
(:func:`tfsoft.topk.drop_excluded`). A slot left without an item (a catalog smaller than
``k + exclusions``) holds the padding id (``-1`` or ``""``) and the score
:data:`tfsoft.topk.LOWEST_SCORE` (``float32`` lowest). Two signatures rather than one optional
input because TF Serving requires a request to carry exactly the signature's inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from tfsoft.backend import tf
from tfsoft.errors import ExportError
from tfsoft.losses.logits import prepare_embeddings
from tfsoft.topk import LOWEST_SCORE  # noqa: F401  (re-exported: the score of an empty slot)

QUERY_INPUTS = ("user_id", "history")
PAD_ID = {"int64": -1, "string": ""}
_TF_DTYPES = {"int64": tf.int64, "string": tf.string}


def write_id_file(path: str | Path, tokens: Sequence, dtype: str) -> Path:
    """One raw id per line, line ``i`` = index ``i + 1`` (the asset a lookup table reads)."""
    lines = []
    for row, token in enumerate(tokens, start=1):
        text = str(token)
        if dtype == "string" and (not text or any(ch in text for ch in "\n\r")):
            raise ExportError(f"raw id {token!r} (vocabulary row {row}) is empty or holds a line break; "
                              f"such ids cannot be written to a serving vocabulary file")
        lines.append(text)
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class IdLookup(tf.Module):
    """Raw id <-> model index, from an id file (:func:`write_id_file`); unknown ids -> 0."""

    def __init__(self, id_file: str | Path, dtype: str, name: str):
        super().__init__(name=name)
        if dtype not in _TF_DTYPES:
            raise ExportError(f"vocabulary dtype must be int64 or string; got {dtype!r}")
        self.dtype = _TF_DTYPES[dtype]
        self.pad = PAD_ID[dtype]
        whole_line, line_number = tf.lookup.TextFileIndex.WHOLE_LINE, tf.lookup.TextFileIndex.LINE_NUMBER
        self.to_index_table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(str(id_file), self.dtype, whole_line, tf.int64, line_number), -1)
        self.to_id_table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(str(id_file), tf.int64, line_number, self.dtype, whole_line), self.pad)

    def to_index(self, ids):
        """Raw ids -> int64 indices (line number + 1; unknown -> 0 = OOV)."""
        return self.to_index_table.lookup(ids) + 1

    def to_id(self, indices):
        """Indices -> raw ids (0 and unknown -> the padding id)."""
        return self.to_id_table.lookup(tf.cast(indices, tf.int64) - 1)


def pack_history(indices, max_history: int):
    """Drop OOV/padding (0) entries, keep the last ``max_history``, left-pad with 0: [B, max_history]."""
    known = tf.ragged.boolean_mask(indices, indices > 0)[:, -max_history:]
    return tf.reverse(tf.reverse(known, axis=[1]).to_tensor(0, shape=[None, max_history]), axis=[1])


class RetrievalServable(tf.Module):
    """Query encoder + vocabularies + index, with the serving signatures (module docstring).

    Args:
        query_tower: Keras layer, ``{"user": [B], "history": [B, L]}`` -> [B, d] or [B, L, d];
            ``None`` with ``user_embeddings``.
        user_embeddings: [U, d] precomputed query embeddings per user index, for towers that
            read the user id only (ID, feature and LightGCN towers): serving is a table lookup.
        index: a :mod:`tfsoft.export.index` index over the candidate embeddings.
        candidate_embeddings: [V, d] candidate embeddings (scoring space), row 0 = OOV.
        users, items: :class:`IdLookup` tables.
        inputs: the query inputs, a subset of :data:`QUERY_INPUTS`.
        max_history: history length the query tower reads.
        k: results per query.
        score_similarity: ``cosine`` normalises the query before search.
    """

    def __init__(self, *, query_tower, user_embeddings, index, candidate_embeddings, users: IdLookup,
                 items: IdLookup, inputs: Sequence[str], max_history: int, k: int, score_similarity: str):
        super().__init__(name="tfsoft_retrieval")
        inputs = tuple(inputs)
        if not inputs or any(name not in QUERY_INPUTS for name in inputs):
            raise ExportError(f"query inputs must be a non-empty subset of {QUERY_INPUTS}; got {inputs}")
        if (query_tower is None) == (user_embeddings is None):
            raise ExportError("give exactly one of query_tower and user_embeddings")
        self.query_tower = query_tower
        self.user_embeddings = (None if user_embeddings is None else
                                tf.Variable(np.asarray(user_embeddings, np.float32), trainable=False,
                                            name="user_embeddings"))
        self.index = index
        self.candidates = tf.Variable(np.asarray(candidate_embeddings, np.float32), trainable=False,
                                      name="candidate_embeddings")
        self.users, self.items = users, items
        self.inputs, self.max_history, self.k = inputs, int(max_history), int(k)
        self.score_similarity = score_similarity

    # ------------------------------------------------------------------ maths
    def query_vectors(self, features: dict):
        """[B, d] query embeddings in the scoring space from raw query inputs."""
        model_features = {}
        if "user_id" in features:
            model_features["user"] = self.users.to_index(features["user_id"])
        if "history" in features:
            model_features["history"] = pack_history(self.items.to_index(features["history"]), self.max_history)
        if self.user_embeddings is not None:
            query = tf.gather(self.user_embeddings, model_features["user"])
        else:
            batch = tf.shape(next(iter(model_features.values())))[0]
            model_features.setdefault("user", tf.zeros([batch], tf.int64))
            model_features.setdefault("history", tf.zeros([batch, self.max_history], tf.int64))
            query = self.query_tower(model_features, training=False)
            if query.shape.rank == 3:
                query = query[:, -1]
        return prepare_embeddings(query, self.score_similarity) if self.score_similarity == "cosine" else query

    def top_k(self, features: dict, exclude_item_ids=None):
        """``{"item_ids": [B, k] raw ids, "scores": [B, k]}``; ``exclude_item_ids`` [B, E] raw ids
        (unknown ids and padding map to index 0 and are ignored) are left out. Each index
        applies the exclusion its own way (module docstring); empty slots hold index 0, which
        maps to the padding id."""
        query = self.query_vectors(features)
        excluded = None if exclude_item_ids is None else self.items.to_index(exclude_item_ids)
        indices, scores = self.index.search(query, self.k, exclude=excluded)
        return {"item_ids": self.items.to_id(indices), "scores": scores}

    # ------------------------------------------------------------- signatures
    def input_specs(self) -> dict:
        specs = {}
        if "user_id" in self.inputs:
            specs["user_id"] = tf.TensorSpec([None], self.users.dtype, name="user_id")
        if "history" in self.inputs:
            specs["history"] = tf.TensorSpec([None, None], self.items.dtype, name="history")
        return specs

    def signatures(self) -> dict:
        """Concrete functions for ``tf.saved_model.save(..., signatures=...)``."""
        specs = self.input_specs()
        exclude_spec = {"exclude_item_ids": tf.TensorSpec([None, None], self.items.dtype, name="exclude_item_ids")}

        @tf.function
        def serving_default(**features):
            return self.top_k(features)

        @tf.function
        def top_k_excluding(**features):
            exclude = features.pop("exclude_item_ids")
            return self.top_k(features, exclude)

        @tf.function
        def query_embedding(**features):
            return {"embedding": self.query_vectors(features)}

        @tf.function
        def candidate_embedding(item_ids):
            index = self.items.to_index(item_ids)
            return {"embedding": tf.gather(self.candidates, index), "known": index > 0}

        return {
            "serving_default": serving_default.get_concrete_function(**specs),
            "top_k_excluding": top_k_excluding.get_concrete_function(**specs, **exclude_spec),
            "query_embedding": query_embedding.get_concrete_function(**specs),
            "candidate_embedding": candidate_embedding.get_concrete_function(
                tf.TensorSpec([None], self.items.dtype, name="item_ids")),
        }
