"""What a batch job needs to know about an exported version, read before anything loads.

``--model`` is a model base path (the newest integer version is used) or one version
directory. The facts come from the version's ``assets.extra/tfsoft_export.json`` (written by
``tfsoft export``): the query inputs (``user_id`` and/or ``history``), the raw id dtypes, ``k``
and the index kind. A SavedModel without that file (made by hand) is described from its
``saved_model.pb`` signature definitions instead.

Example:
    >>> info = resolve_export("exports/recs")  # doctest: +SKIP
    >>> info.version, info.inputs, info.k                               # doctest: +SKIP
    (3, ('history',), 100)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tfsoft.errors import ExportError

METADATA_PATH = "assets.extra/tfsoft_export.json"
QUERY_INPUTS = ("user_id", "history")
_PROTO_DTYPES = {9: "int64", 7: "string"}  # tensorflow DataType enum values


@dataclass(frozen=True)
class ExportInfo:
    """One exported version, described for a batch job.

    Attributes:
        path: the version directory.
        version: its integer version (0 if its directory name is not an integer).
        name: the model name (the base path's directory name).
        inputs: the query inputs of its signatures, a subset of ``("user_id", "history")``.
        user_dtype, item_dtype: ``int64`` or ``string``.
        k: results per query of its top-k signatures.
        index: ``brute_force``, ``scann`` or ``unknown``.
        signatures: its signature names.
    """

    path: Path
    version: int
    name: str
    inputs: tuple
    user_dtype: str
    item_dtype: str
    k: int
    index: str
    signatures: tuple

    def to_dict(self) -> dict:
        return {"path": str(self.path), "version": self.version, "name": self.name, "inputs": list(self.inputs),
                "user_id_dtype": self.user_dtype, "item_id_dtype": self.item_dtype, "k": self.k,
                "index": self.index}


def version_directory(model: str | Path) -> Path:
    """The version directory of ``--model``: itself if it holds ``saved_model.pb``, else its newest
    integer subdirectory."""
    path = Path(model)
    if (path / "saved_model.pb").is_file():
        return path
    if not path.is_dir():
        raise ExportError(f"--model '{path}' does not exist or is not a directory; give an export base path "
                          f"(written by tfsoft export) or one of its version directories")
    versions = sorted((int(entry.name) for entry in path.iterdir() if entry.name.isdigit() and entry.is_dir()))
    if not versions:
        raise ExportError(f"--model '{path}' holds neither saved_model.pb nor integer version directories")
    version_dir = path / str(versions[-1])
    if not (version_dir / "saved_model.pb").is_file():
        raise ExportError(f"the newest version '{version_dir}' has no saved_model.pb")
    return version_dir


def resolve_export(model: str | Path) -> ExportInfo:
    """Describe ``--model`` (module docstring)."""
    path = version_directory(model)
    version = int(path.name) if path.name.isdigit() else 0
    name = path.resolve().parent.name if path.name.isdigit() else path.resolve().name
    metadata_file = path / METADATA_PATH
    if metadata_file.is_file():
        try:
            metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
            return ExportInfo(path, version, name, tuple(metadata["inputs"]), metadata["user_id_dtype"],
                              metadata["item_id_dtype"], int(metadata["k"]), metadata.get("index", "unknown"),
                              tuple(metadata.get("signatures", ())))
        except (ValueError, KeyError, TypeError) as error:
            raise ExportError(f"'{metadata_file}' is not an export description tfsoft can read ({error!r})") from None
    return _from_signatures(path, version, name)


def _from_signatures(path: Path, version: int, name: str) -> ExportInfo:
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    signatures = saved.meta_graphs[0].signature_def
    if "serving_default" not in signatures:
        raise ExportError(f"'{path}' has no serving_default signature; found: {', '.join(sorted(signatures))}")
    default = signatures["serving_default"]
    inputs = tuple(key for key in QUERY_INPUTS if key in default.inputs)
    if not inputs or "item_ids" not in default.outputs:
        raise ExportError(f"'{path}' serving_default takes {sorted(default.inputs)} and returns "
                          f"{sorted(default.outputs)}; a batch job needs inputs among {list(QUERY_INPUTS)} "
                          f"and outputs item_ids, scores")
    item_dtype = _PROTO_DTYPES.get(default.outputs["item_ids"].dtype, "int64")
    user_dtype = _PROTO_DTYPES.get(default.inputs["user_id"].dtype, "int64") if "user_id" in inputs else item_dtype
    dims = [dim.size for dim in default.outputs["item_ids"].tensor_shape.dim]
    k = dims[1] if len(dims) == 2 and dims[1] > 0 else 0
    return ExportInfo(path, version, name, inputs, user_dtype, item_dtype, k, "unknown",
                      tuple(key for key in signatures if not key.startswith("__")))
