"""Embedding-table gradients handed to the optimizer: sparse slices or one dense tensor.

An embedding lookup's gradient is a ``tf.IndexedSlices``: one row per looked-up id, with
repeats (a history of 20 items × 256 examples is 5,120 rows). Keras optimizers then

1. deduplicate the rows (``tf.unique`` + ``unsorted_segment_sum``), and
2. for Adam and its kin (tf_keras Adam, AdamW, Adamax, Nadam, Lion, RMSprop, SGD with
   momentum; legacy Adam) decay the state of **every** row of the table anyway (``m ← β1·m``
   over the whole slot, then a scatter-add of the touched rows;
   ``tf_keras/src/optimizers/adam.py``).

For those optimizers the sparse path is a dense update with extra steps, so summing the
slices into a dense ``[V, d]`` gradient, ``G_r = Σ_{k: id_k = r} g_k``, gives the same update
(the deduplicated sum is exactly ``G`` at the touched rows and 0 elsewhere) with fewer ops,
and lets an optimizer with a fused dense kernel use it (``keras.optimizers.legacy.Adam`` →
``ResourceApplyAdam``). Measured on lastfm_small: ``bench/results/throughput_lastfm.json``.

``auto`` densifies only for optimizers whose dense and sparse updates are checked to agree
(:data:`SAME_UPDATE_DENSE_OR_SPARSE`, ``tests/test_gradients.py``). Others keep their
slices: lazy optimizers, whose sparse update moves only the touched rows on purpose
(:class:`tfsoft.optimizers.LazyAdam`; legacy Adamax, SGD/RMSprop with momentum), and
unknown ones. So does any optimizer that clips (``clipnorm``, ``global_clipnorm``,
``clipvalue``): Keras clips before it deduplicates, so clipping slices and clipping their
sum differ.

Among the agreeing optimizers, those whose sparse update really is sparse (SGD without
momentum, Adagrad, Ftrl, Adadelta) pay O(V) per step for a dense gradient, so they get one
only when the slices hold at least as many rows (repeats included, static shapes only) as the
table: small catalogs and long histories, where the dense sum is no dearer.

Across replicas the choice also sets what crosses the wire: a dense gradient is all-reduced
(V rows), slices are all-gathered (replicas × slice rows). So with more than one replica
``auto`` makes a table's gradient dense only when the gathered slices would hold at least as
many rows as the table: a 1M-item table stays sparse on 8 GPUs.
"""

from __future__ import annotations

from typing import Literal

from tfsoft import distribute
from tfsoft.backend import keras, tf
from tfsoft.errors import ConfigError

DensePolicy = Literal["auto", "always", "never"]
DENSE_POLICIES = ("auto", "always", "never")


def check_dense_policy(policy) -> None:
    """Raise a :class:`ConfigError` naming the allowed values unless ``policy`` is one of them."""
    if policy not in DENSE_POLICIES:
        raise ConfigError(f"dense_gradients must be one of {DENSE_POLICIES}; got {policy!r}")


def _classes(module, names) -> tuple[type, ...]:
    return tuple(getattr(module, name) for name in names if hasattr(module, name))


#: Optimizer classes (exact types) whose update is the same on the slices and on their dense sum.
SAME_UPDATE_DENSE_OR_SPARSE: tuple[type, ...] = _classes(
    keras.optimizers, ("Adam", "AdamW", "Adamax", "Nadam", "Lion", "RMSprop", "SGD", "Adagrad", "Ftrl", "Adadelta")
) + _classes(keras.optimizers.legacy, ("Adam",))

#: Of those, the ones whose sparse update touches every row of the table anyway.
UPDATES_EVERY_ROW: tuple[type, ...] = _classes(
    keras.optimizers, ("Adam", "AdamW", "Adamax", "Nadam", "Lion", "RMSprop")
) + _classes(keras.optimizers.legacy, ("Adam",))


def _unwrap(optimizer):
    """The optimizer that applies the update (inside a mixed-precision LossScaleOptimizer)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def _clips(optimizer) -> bool:
    return any(getattr(optimizer, name, None) is not None for name in ("clipnorm", "global_clipnorm", "clipvalue"))


def same_update_dense_or_sparse(optimizer) -> bool:
    """Whether ``optimizer`` makes the same update from slices as from their dense sum."""
    optimizer = _unwrap(optimizer)
    return type(optimizer) in SAME_UPDATE_DENSE_OR_SPARSE and not _clips(optimizer)


def updates_every_row(optimizer) -> bool:
    """Whether ``optimizer``'s sparse update decays the state of every row of a table anyway."""
    optimizer = _unwrap(optimizer)
    if type(optimizer) is keras.optimizers.SGD:
        return bool(float(keras.backend.get_value(optimizer.momentum)) > 0)
    return type(optimizer) in UPDATES_EVERY_ROW


def dense_from_slices(gradient: tf.IndexedSlices, num_rows) -> tf.Tensor:
    """``G[r] = Σ_{k: indices_k = r} values_k``: the dense [num_rows, ...] sum of the slices."""
    return tf.math.unsorted_segment_sum(gradient.values, gradient.indices, num_rows)


def should_densify(gradient: tf.IndexedSlices, variable, optimizer, policy: DensePolicy = "auto",
                   replicas: int = 1) -> bool:
    """The rule of :func:`prepare_gradients` for one sparse gradient (decided while tracing).

    ``always``/``never`` as named. ``auto``: never unless the optimizer makes the same update
    either way (:func:`same_update_dense_or_sparse`); then dense when, on one replica, it
    updates every row anyway (:func:`updates_every_row`), or when the slices of all replicas
    hold at least as many rows as the table (``replicas × slice rows ≥ V``, repeats counted,
    statically known shapes only).
    """
    check_dense_policy(policy)
    if policy != "auto":
        return policy == "always"
    if not same_update_dense_or_sparse(optimizer):
        return False
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
    replicas = distribute.num_replicas()
    prepared = []
    for gradient, variable in zip(gradients, variables):
        if isinstance(gradient, tf.IndexedSlices) and should_densify(gradient, variable, optimizer, policy, replicas):
            rows = variable.shape[0] if variable.shape[0] is not None else tf.shape(variable)[0]
            gradient = dense_from_slices(gradient, rows)
        prepared.append(gradient)
    return prepared
