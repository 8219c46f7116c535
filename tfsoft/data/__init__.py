"""Data layer: read and validate interaction logs, index ids, split, build examples.

Flow: :func:`read_interactions` (or :func:`load_dataset` by name) -> :func:`prepare`
(k-core, vocabularies, split, item counts) -> :func:`next_item_examples` ->
:func:`make_dataset` (``tf.data``). TensorFlow is imported only by the pipeline module.
"""

from tfsoft.data.filtering import KCoreReport, k_core
from tfsoft.data.prepare import PreparedData, SplitSpec, prepare
from tfsoft.data.ragged import Ragged
from tfsoft.data.reader import ColumnSpec, read_interactions
from tfsoft.data.registry import DATASETS, DatasetInfo, dataset_info, dataset_path, load_dataset, load_interactions
from tfsoft.data.sequences import NextItemExamples, left_pad, next_item_examples, query_features
from tfsoft.data.splits import Queries, Split, cut_windows, leave_one_out, ratio_split, temporal_split
from tfsoft.data.vocabulary import OOV_INDEX, PAD_INDEX, Vocabulary, item_counts


def make_dataset(*args, **kwargs):
    """See :func:`tfsoft.data.pipeline.make_dataset` (imported lazily: it loads TensorFlow)."""
    from tfsoft.data.pipeline import make_dataset as _make_dataset

    return _make_dataset(*args, **kwargs)


__all__ = [
    "ColumnSpec", "DATASETS", "DatasetInfo", "KCoreReport", "NextItemExamples", "OOV_INDEX", "PAD_INDEX",
    "PreparedData", "Queries", "Ragged", "Split", "SplitSpec", "Vocabulary", "cut_windows", "dataset_info",
    "dataset_path", "item_counts", "k_core", "leave_one_out", "left_pad", "load_dataset", "load_interactions",
    "make_dataset",
    "next_item_examples", "prepare", "query_features", "ratio_split", "read_interactions", "temporal_split",
]
