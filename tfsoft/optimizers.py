"""Optimizers for large embedding tables.

Keras' Adam decays the moments of **every** row of a table at every step, even when the
gradient is sparse (``tf_keras/src/optimizers/adam.py``): the step costs O(V·d) whatever the
batch. On a 1M-item table (d = 64) that is about a second per step on 2 CPU cores
(``bench/bench_optimizers.py``). :class:`LazyAdam` updates only the rows a batch touched.
"""

from __future__ import annotations

from tfsoft.backend import keras, tf
from tfsoft.errors import ConfigError


@keras.utils.register_keras_serializable(package="tfsoft")
class LazyAdam(keras.optimizers.Adam):
    """Adam that, on a sparse (embedding) gradient, updates only the rows in the gradient.

    For each row r in the batch's (deduplicated) gradient ``g_r``, with t the step::

        m_r ← β1·m_r + (1−β1)·g_r,   v_r ← β2·v_r + (1−β2)·g_r²,
        w_r ← w_r − lr·√(1−β2^t)/(1−β1^t) · m_r / (√v_r + ε)

    (Kingma & Ba 2015, Algorithm 1, restricted to the touched rows); rows not in the batch
    keep their weights and moments. This is the "lazy" Adam of TensorFlow 1's
    ``LazyAdamOptimizer`` and PyTorch's ``SparseAdam``: it differs from Adam in that an untouched
    row neither decays its moments nor keeps moving on its momentum. Dense gradients (towers'
    dense layers) get the ordinary Adam update. Cost per step: O(rows in the batch · d).
    :func:`tfsoft.gradients.prepare_gradients` (``auto``) never densifies its gradients;
    ``dense_gradients="always"`` would make it plain Adam. Clipping (``clipnorm``, ...)
    applies to the batch's slices before they are summed, as for every Keras optimizer.
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="LazyAdam", **kwargs):
        for option in ("amsgrad", "use_ema"):
            if kwargs.get(option):
                raise ConfigError(f"LazyAdam does not support {option}=True")
        if kwargs.get("weight_decay"):
            raise ConfigError("LazyAdam does not support weight_decay: Keras decays every row of every table "
                              "each step, which is what LazyAdam avoids; use an l2 embedding regulariser instead")
        # A batch's number of distinct rows changes every step: under XLA (Keras' default on a
        # GPU) every new count would be a new compilation.
        kwargs.setdefault("jit_compile", False)
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         name=name, **kwargs)

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        alpha = (tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, step))
                 / (1 - tf.pow(beta_1, step)))
        key = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[key], self._velocities[key]
        # apply_gradients has already summed repeated indices (_deduplicate_sparse_grad).
        indices, values = gradient.indices, tf.cast(gradient.values, dtype)
        m_rows = beta_1 * tf.gather(m, indices) + (1 - beta_1) * values
        v_rows = beta_2 * tf.gather(v, indices) + (1 - beta_2) * tf.square(values)
        m.scatter_update(tf.IndexedSlices(m_rows, indices))
        v.scatter_update(tf.IndexedSlices(v_rows, indices))
        epsilon = self.epsilon * tf.sqrt(1 - tf.pow(beta_2, step)) if self.adaptive_epsilon else self.epsilon
        variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + epsilon), indices))
