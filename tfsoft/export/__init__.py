"""Export trained runs as TF Serving model versions (SavedModel + retrieval index + warmup)."""

from tfsoft.export.exporter import METADATA_FILE, ExportResult, export_run, query_inputs
from tfsoft.export.index import INDEX_KINDS, BruteForceIndex, ScannIndex, ScannParams, build_index, index_recall
from tfsoft.export.servable import PAD_ID, RetrievalServable
from tfsoft.export.versions import list_versions, next_version, publish_version
from tfsoft.export.warmup import WARMUP_FILE, read_warmup_requests

__all__ = [
    "BruteForceIndex", "ExportResult", "INDEX_KINDS", "METADATA_FILE", "PAD_ID", "RetrievalServable", "ScannIndex",
    "ScannParams", "WARMUP_FILE", "build_index", "export_run", "index_recall", "list_versions", "next_version",
    "publish_version", "query_inputs", "read_warmup_requests",
]
