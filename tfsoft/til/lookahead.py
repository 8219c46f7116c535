"""The one-step look-ahead of TIL's bilevel step (Eq. 14–15), on a batch's rows only.

``Θ′(Λ) = Θ − η_in·∇_Θ J_in(Θ, Λ)`` is formed only for the table rows the batch touches (its
users, its positive and negative items), as a :class:`Displacement` ``(rows, Δ)`` with
``Θ′[rows] = Θ[rows] − Δ``: no weight is copied. ``Δ`` is a differentiable function of Λ when
it was computed on a tape that watches Λ, which is what makes ``∂J_out(Θ′(Λ))/∂Λ`` exact.
"""

from __future__ import annotations

from dataclasses import dataclass

from tfsoft.backend import tf


@dataclass(frozen=True)
class Displacement:
    """The look-ahead of one table: ``Θ′[rows] = Θ[rows] − delta``, every other row unchanged.

    Attributes:
        rows: [R] unique int64 row indices.
        delta: [R, d] η_in·∇_Θ J_in at those rows.
        index: [M] int32 for the ids the displacement was built from (:func:`displace`): the
            position of each id in ``rows`` (``tf.unique``'s idx), so ``delta`` gathers per id.
    """

    rows: tf.Tensor
    delta: tf.Tensor
    index: tf.Tensor

    def gather(self, table) -> tf.Tensor:
        """Θ′ at the ids the displacement was built from, [M, d] (``table[ids] − delta[index]``)."""
        return tf.gather(table, tf.gather(self.rows, self.index)) - tf.gather(self.delta, self.index)

    def dense(self, table) -> tf.Tensor:
        """The whole table at Θ′ (for a backbone that propagates over every row, e.g. LightGCN)."""
        table = tf.convert_to_tensor(table)
        return table - tf.scatter_nd(self.rows[:, tf.newaxis], self.delta, tf.shape(table, out_type=tf.int64))


def gradient_rows(gradient, rows: tf.Tensor, num_rows: int) -> tf.Tensor:
    """[R, d] the rows ``rows`` of a table's gradient (dense or ``tf.IndexedSlices``), summed over
    repeated slices; slices of other rows are dropped. Differentiable (second order included).

    Args:
        gradient: a [V, d] tensor or IndexedSlices (None: zeros).
        rows: [R] unique int64 rows; num_rows: V.
    """
    rows = tf.cast(rows, tf.int64)
    if gradient is None:
        raise ValueError("the inner loss does not depend on this table; nothing to look ahead")
    if not isinstance(gradient, tf.IndexedSlices):
        return tf.gather(gradient, rows)
    count = tf.shape(rows, out_type=tf.int64)[0]
    # position of every table row in `rows`, `count` (a dropped segment) for the others
    position = tf.tensor_scatter_nd_update(tf.fill([int(num_rows)], count), rows[:, tf.newaxis],
                                           tf.range(count, dtype=tf.int64))
    segment = tf.gather(position, tf.cast(gradient.indices, tf.int64))
    summed = tf.math.unsorted_segment_sum(gradient.values, segment, count + 1)
    return summed[:-1]


def displace(ids: tf.Tensor, gradient, learning_rate: float, num_rows: int) -> Displacement:
    """The look-ahead of one table at the rows of ``ids`` (any shape; repeats allowed):
    ``Δ = η_in·(∇_Θ J_in)[unique(ids)]`` (TIL Eq. 15 on the batch's rows)."""
    rows, index = tf.unique(tf.reshape(tf.cast(ids, tf.int64), [-1]), out_idx=tf.int32)
    return Displacement(rows, learning_rate * gradient_rows(gradient, rows, num_rows), index)
