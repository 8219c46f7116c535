"""Embedding-table gradients handed to the optimizer: sparse slices or one dense tensor.

An embedding lookup's gradient is a ``tf.IndexedSlices``: one row per looked-up id, with
repeats (a history of 20 items × 256 examples is 5,120 rows). Keras optimizers then

1. deduplicate the rows (``tf.unique`` + ``unsorted_segment_sum``), and
2. for Adam and its kin (AdamW, Adamax, Nadam, Lion, RMSprop; legacy Adam too) decay the
   moment estimates of **every** row of the table anyway (``m ← β1·m`` over the whole slot,
   then a scatter-add of the touched rows; ``tf_keras/src/optimizers/adam.py``).

For those optimizers the sparse path is a dense update with extra steps, so summing the
slices into a dense ``[V, d]`` gradient, ``G_r = Σ_{k: id_k = r} g_k``, gives the same update
(the same ``m``, ``v`` and variable: the deduplicated sum is exactly ``G`` at the touched rows
and 0 elsewhere) with fewer ops, and lets an optimizer with a fused dense kernel use it
(``keras.optimizers.legacy.Adam`` → ``ResourceApplyAdam``). Measured on lastfm_small
(``bench/bench_throughput.py``): see ``bench/results/throughput_lastfm.json``.

For optimizers whose sparse update really is sparse (SGD, Adagrad: only touched rows move) a
dense gradient costs O(V) per step, so it is only used when the slices already hold at least
as many rows as the table (small catalogs, long histories), where the dense sum is no dearer.

Across replicas the choice also sets what crosses the wire: a dense gradient is all-reduced
(V rows), slices are all-gathered (replicas × slice rows). So with more than one replica
``auto`` makes a table's gradient dense only when the gathered slices would hold at least as
many rows as the table, whatever the optimizer: a 1M-item table stays sparse on 8 GPUs.
"""

from __future__ import annotations

from typing import Literal

from tfsoft.backend import keras, tf
from tfsoft.errors import ConfigError

DensePolicy = Literal["auto", "always", "never"]
DENSE_POLICIES = ("auto", "always", "never")


def _every_row_optimizers() -> tuple[type, ...]:
    """Optimizer classes whose update on an IndexedSlices gradient touches every row."""
    names = ("Adam", "AdamW", "Adamax", "Nadam", "Lion", "RMSprop")
    modern = tuple(getattr(keras.optimizers, name) for name in names if hasattr(keras.optimizers, name))
    legacy = tuple(getattr(keras.optimizers.legacy, name) for name in ("Adam", "Adamax", "Nadam")
                   if hasattr(keras.optimizers.legacy, name))
    return modern + legacy


def updates_every_row(optimizer) -> bool:
    """Whether ``optimizer``'s sparse update decays the state of every row of a table anyway
    (:class:`tfsoft.optimizers.LazyAdam`, an Adam that does not, is excluded)."""
    from tfsoft.optimizers import LazyAdam

    return isinstance(optimizer, _every_row_optimizers()) and not isinstance(optimizer, LazyAdam)


def dense_from_slices(gradient: tf.IndexedSlices, num_rows) -> tf.Tensor:
    """``G[r] = Σ_{k: indices_k = r} values_k``: the dense [num_rows, ...] sum of the slices."""
    return tf.math.unsorted_segment_sum(gradient.values, gradient.indices, num_rows)


def should_densify(gradient: tf.IndexedSlices, variable, optimizer, policy: DensePolicy = "auto",
                   replicas: int = 1) -> bool:
    """The rule of :func:`prepare_gradients` for one sparse gradient (decided while tracing).

    ``always``/``never`` as named; ``auto``: dense when the slices of all replicas hold at
    least as many rows as the table (``replicas × slice rows ≥ V``; statically known shapes
    only), or, on one replica, when the optimizer updates every row anyway
    (:func:`updates_every_row`).
    """
    if policy not in DENSE_POLICIES:
        raise ConfigError(f"dense_gradients must be one of {DENSE_POLICIES}; got {policy!r}")
    if policy != "auto":
        return policy == "always"
    if replicas == 1 and updates_every_row(optimizer):
        return True
    slice_rows, table_rows = gradient.values.shape[0], variable.shape[0]
    return slice_rows is not None and table_rows is not None and replicas * slice_rows >= table_rows


def prepare_gradients(gradients, variables, optimizer, policy: DensePolicy = "auto") -> list:
    """Gradients for ``optimizer.apply_gradients``: sparse table gradients made dense per
    :func:`should_densify`; dense gradients and ``None`` pass through unchanged.

    Args:
        gradients: list aligned with ``variables`` (``tape.gradient`` output).
        variables: the trainable variables.
        optimizer: the optimizer that will apply them (its class decides ``auto``).
        policy: ``auto`` | ``always`` | ``never``.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    prepared = []
    for gradient, variable in zip(gradients, variables):
        if isinstance(gradient, tf.IndexedSlices) and should_densify(gradient, variable, optimizer, policy, replicas):
            rows = variable.shape[0] if variable.shape[0] is not None else tf.shape(variable)[0]
            gradient = dense_from_slices(gradient, rows)
        prepared.append(gradient)
    return prepared
