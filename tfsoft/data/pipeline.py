"""``tf.data`` input pipelines over in-memory example arrays."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from tfsoft.backend import tf
from tfsoft.errors import DataError


def make_dataset(
    features: Mapping[str, np.ndarray],
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    drop_remainder: bool = False,
    repeat: bool = False,
    prefetch: bool = True,
) -> "tf.data.Dataset":
    """A batched ``tf.data.Dataset`` of feature dicts, deterministic given ``seed``.

    Shuffling uses a full-size buffer with ``seed`` and reshuffles every epoch; the order of
    every epoch is the same from run to run for the same seed (the dataset's op seed fixes it
    independently of TensorFlow's global seed).

    Args:
        features: name -> array with the same first dimension (examples).
        batch_size: examples per batch (global batch size under a distribution strategy).
        shuffle: shuffle examples (training) or keep their order (evaluation).
        seed: shuffle seed.
        drop_remainder: drop the last partial batch (static batch shapes for distribution).
        repeat: repeat forever (then pass ``steps_per_epoch`` to ``fit``).
        prefetch: overlap input with training (``tf.data.AUTOTUNE``).
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1; got {batch_size}")
    if not features:
        raise DataError("no features given to make_dataset")
    sizes = {name: len(values) for name, values in features.items()}
    if len(set(sizes.values())) != 1:
        raise DataError(f"features have different numbers of examples: {sizes}")
    (num_examples,) = set(sizes.values())
    if num_examples == 0:
        raise DataError("no examples to build a dataset from")
    dataset = tf.data.Dataset.from_tensor_slices({name: np.asarray(values) for name, values in features.items()})
    if shuffle:
        dataset = dataset.shuffle(num_examples, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = True
    dataset = dataset.with_options(options)
    if prefetch:
        dataset = dataset.prefetch(tf.data.AUTOTUNE)
    return dataset
