"""Item clusters for the Multi-Interest state: end-to-end (TIL Eq. 7–9, after DEC) and K-means.

- :func:`student_t_assignment`: Q_ik ∝ (1 + ‖q_i − Φ_k‖²/τ)^{−(τ+1)/2} (Eq. 7; τ = 1, one degree
  of freedom, as DEC and the authors' code).
- :func:`sharpened_target`: T_ik ∝ Q_ik² / Σ_i Q_ik (Eq. 8), held fixed (stop-gradient) between
  refreshes.
- :func:`clustering_loss`: KL(T ‖ Q) = Σ_i Σ_k T_ik log(T_ik/Q_ik) (Eq. 9), here the mean over items.
- :func:`kmeans`: Lloyd iterations from given centres (the initialisation of Φ after
  pre-training, and the periodic clustering of TIL-MIK).
"""

from __future__ import annotations

from tfsoft.backend import tf


def squared_distances(points: tf.Tensor, centres: tf.Tensor) -> tf.Tensor:
    """[M, K] ‖x_m − c_k‖², clipped at 0 (the expanded form can round below it)."""
    cross = tf.matmul(points, centres, transpose_b=True)
    distance = tf.reduce_sum(points ** 2, -1)[:, tf.newaxis] - 2.0 * cross + tf.reduce_sum(centres ** 2, -1)[tf.newaxis]
    return tf.maximum(distance, 0.0)


def student_t_assignment(points: tf.Tensor, centres: tf.Tensor, degrees_of_freedom: float = 1.0) -> tf.Tensor:
    """Soft assignment Q [M, K] of points to centres (TIL Eq. 7), rows summing to 1.

    Example:
        >>> student_t_assignment(tf.constant([[0.0, 0.0]]), tf.constant([[0.0, 0.0], [1.0, 0.0]])).numpy()
        array([[0.6666667, 0.3333333]], dtype=float32)
    """
    tau = float(degrees_of_freedom)
    kernel = tf.pow(1.0 + squared_distances(points, centres) / tau, -(tau + 1.0) / 2.0)
    return kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)


def sharpened_target(assignment: tf.Tensor, valid: tf.Tensor | None = None) -> tf.Tensor:
    """T [M, K] = (Q_ik²/f_k) / Σ_k' (Q_ik'²/f_k'), f_k = Σ_i Q_ik (TIL Eq. 8), without gradient.

    Args:
        assignment: Q [M, K]; valid: optional [M] bool, rows that count in f_k (index 0, the
            OOV row, does not).
    """
    assignment = tf.stop_gradient(assignment)
    weight = tf.ones_like(assignment[:, :1]) if valid is None else tf.cast(valid, assignment.dtype)[:, tf.newaxis]
    frequency = tf.reduce_sum(assignment * weight, axis=0, keepdims=True)
    sharpened = tf.math.divide_no_nan(assignment ** 2, frequency)
    return sharpened / tf.reduce_sum(sharpened, axis=1, keepdims=True)


def clustering_loss(target: tf.Tensor, assignment: tf.Tensor, valid: tf.Tensor | None = None) -> tf.Tensor:
    """Mean over (valid) items of KL(T_i ‖ Q_i) = Σ_k T_ik log(T_ik / Q_ik) (TIL Eq. 9 / |V|).

    The paper sums over items; the mean keeps γ's scale independent of the catalog, as the
    BPR term is a mean over the batch."""
    target = tf.stop_gradient(target)
    per_item = tf.reduce_sum(tf.math.xlogy(target, target) - target * tf.math.log(assignment), axis=1)
    if valid is None:
        return tf.reduce_mean(per_item)
    valid = tf.cast(valid, per_item.dtype)
    return tf.reduce_sum(per_item * valid) / tf.maximum(tf.reduce_sum(valid), 1.0)


def hard_assignment(assignment: tf.Tensor) -> tf.Tensor:
    """c_i = argmax_k Q_ik (TIL §4.3), int32 [M]."""
    return tf.argmax(assignment, axis=1, output_type=tf.int32)


def cluster_means(points: tf.Tensor, membership: tf.Tensor, num_clusters: int,
                  fallback: tf.Tensor | None = None) -> tf.Tensor:
    """[K, d] μ_k, the mean of the points of cluster k (TIL §4.2.2); an empty cluster keeps
    ``fallback[k]`` (default 0)."""
    sums = tf.math.unsorted_segment_sum(points, membership, num_clusters)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(points[:, :1]), membership, num_clusters)
    means = tf.math.divide_no_nan(sums, counts)
    if fallback is None:
        return means
    return tf.where(counts > 0, means, fallback)


def kmeans(points: tf.Tensor, centres: tf.Tensor, iterations: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Lloyd's K-means from ``centres``: ``iterations`` rounds of assign-then-average.

    Args:
        points: [M, d]; centres: [K, d] the starting centres (a seeded sample of the points for
            the first clustering, the previous centres afterwards).
    Returns:
        (centres [K, d], membership [M] int32 under the returned centres).
    """
    points = tf.stop_gradient(points)
    num_clusters = centres.shape[0] or tf.shape(centres)[0]
    for _ in range(int(iterations)):
        membership = tf.argmin(squared_distances(points, centres), axis=1, output_type=tf.int32)
        centres = cluster_means(points, membership, num_clusters, fallback=centres)
    membership = tf.argmin(squared_distances(points, centres), axis=1, output_type=tf.int32)
    return centres, membership


def initial_centres(points: tf.Tensor, num_clusters: int, seed: int) -> tf.Tensor:
    """K distinct points drawn without replacement (stateless, seeded): K-means' starting centres."""
    count = tf.shape(points)[0]
    scores = tf.random.stateless_uniform([count], seed=[int(seed), 15])
    return tf.gather(points, tf.math.top_k(scores, k=num_clusters).indices)
