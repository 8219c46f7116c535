"""Batch retrieval: top-k for every user of a file to Parquet (``tfsoft retrieve``).

One concept per module, data flowing one way:

* :mod:`tfsoft.batch.export_info` — what the exported version reads and returns (no TensorFlow);
* :mod:`tfsoft.batch.reader` — input files, column check, fingerprint, rows streamed with pyarrow;
* :mod:`tfsoft.batch.rows` — raw rows -> query rows and rejects (row number + reason);
* :mod:`tfsoft.batch.sharding` — stable hash of the user id -> shard;
* :mod:`tfsoft.batch.vocabulary` — known users, popular items (unknown-user policy);
* :mod:`tfsoft.batch.runner` — the SavedModel signature called on a batch;
* :mod:`tfsoft.batch.output` — part files committed by rename, rejects, resume;
* :mod:`tfsoft.batch.manifest` — per-shard manifests and ``_SUCCESS``;
* :mod:`tfsoft.batch.job` — the in-process job (reader / model / writer threads);
* :mod:`tfsoft.batch.beam` — the same job as an Apache Beam pipeline (``RunInference``).

Nothing here imports TensorFlow or Beam until a job runs.
"""

from tfsoft.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "job": ("RetrieveOptions", "RetrieveSummary", "plan_job", "run_retrieval"),
    "sharding": ("ShardSpec", "shard_of"),
    "export_info": ("ExportInfo", "resolve_export"),
}, globals())
