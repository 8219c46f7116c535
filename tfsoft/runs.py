"""Run directories: the layout ``tfsoft train`` writes and every reader of a run relies on.

A run directory holds everything needed to rebuild, inspect and re-evaluate one training run::

    DIR/
      config.yaml              the resolved config (every default filled in, --set applied)
      user_vocabulary.json     raw user id <-> index (index 0 = OOV/padding)
      item_vocabulary.json     raw item id <-> index
      checkpoints/
        best.weights.h5        weights of the best epoch by train.monitor (validation)
        last.weights.h5        weights of the last completed epoch
        manifest.json          sha256 and size of each checkpoint, rewritten after each checkpoint write
      logs/                    TensorBoard event files (train/ and validation/)
      history.csv              one row per epoch: loss, val_recall@K, val_ndcg@K, ..., seconds
      metrics.json             {"validation": {...}, "test": {...}, "best_epoch", "train_seconds", ...}
      plots/training.png       loss and validation Recall/NDCG per epoch
      plots/long_tail.png      test Recall@K contribution of each item popularity group

Every file is written atomically (temporary file + rename, :mod:`tfsoft.files`), and
``metrics.json`` is written last: a run directory with ``metrics.json`` is complete.

The checkpoints carry checksums: ``checkpoints/manifest.json`` (:data:`CHECKPOINT_MANIFEST`,
a :func:`tfsoft.files.write_manifest` of kind ``tfsoft-checkpoints``) is rewritten, atomically,
after every checkpoint write, and every reader compares a checkpoint with it before loading it
(:func:`check_checkpoint`): a file whose bytes changed since training wrote it (a failing disk,
a bad copy) is named even when its HDF5 structure is intact. Runs written before the manifest
existed, and files it does not list, get the structural check only.
Writing a run is :mod:`tfsoft.train_run`; reading one back (config, vocabularies, data, model
with a checkpoint) is :func:`tfsoft.loaded_run.open_run`. This module imports no TensorFlow,
so a directory that is not a run is refused before TensorFlow loads.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tfsoft.config import Config
from tfsoft.data.registry import DATASETS
from tfsoft.data.vocabulary import Vocabulary
from tfsoft.errors import ConfigError, RunError
from tfsoft.files import entry_problem, read_manifest, write_manifest

CHECKPOINTS = ("best", "last")
#: the checksum manifest of a run's checkpoints, next to them in ``checkpoints/``
CHECKPOINT_MANIFEST = "manifest.json"
CHECKPOINT_MANIFEST_KIND = "tfsoft-checkpoints"


@dataclass(frozen=True)
class RunPaths:
    """The files of a run directory (see the module docstring)."""

    root: Path

    config = property(lambda self: self.root / "config.yaml")
    user_vocabulary = property(lambda self: self.root / "user_vocabulary.json")
    item_vocabulary = property(lambda self: self.root / "item_vocabulary.json")
    checkpoints = property(lambda self: self.root / "checkpoints")
    checkpoint_manifest = property(lambda self: self.checkpoints / CHECKPOINT_MANIFEST)
    logs = property(lambda self: self.root / "logs")
    history = property(lambda self: self.root / "history.csv")
    metrics = property(lambda self: self.root / "metrics.json")
    plots = property(lambda self: self.root / "plots")
    training_plot = property(lambda self: self.plots / "training.png")
    long_tail_plot = property(lambda self: self.plots / "long_tail.png")

    def checkpoint(self, which: str = "best") -> Path:
        """``checkpoints/best.weights.h5`` or ``checkpoints/last.weights.h5``."""
        if which not in CHECKPOINTS:
            raise RunError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}; got {which!r}")
        return self.checkpoints / f"{which}.weights.h5"

    def owned(self) -> list[Path]:
        """Everything a run writes (what ``--overwrite`` removes; other files are left alone)."""
        return [self.config, self.user_vocabulary, self.item_vocabulary, self.checkpoints, self.logs, self.history,
                self.metrics, self.plots]


def claim_run_dir(root: str | Path, *, overwrite: bool = False) -> RunPaths:
    """Create (or, with ``overwrite``, clear the run files of) a run directory.

    Raises:
        RunError: ``root`` is a file, or a non-empty directory and ``overwrite`` is false.
    """
    paths = RunPaths(Path(root))
    if paths.root.exists() and not paths.root.is_dir():
        raise RunError(f"run directory '{paths.root}' exists and is not a directory")
    present = sorted(entry.name for entry in paths.root.iterdir()) if paths.root.is_dir() else []
    if present and not overwrite:
        shown = ", ".join(present[:6]) + (", ..." if len(present) > 6 else "")
        raise RunError(f"run directory '{paths.root}' is not empty (it holds {shown}); pass --overwrite to "
                       f"replace its run files, or choose another --run-dir")
    for path in paths.owned():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    paths.root.mkdir(parents=True, exist_ok=True)
    return paths


def check_data_source(config: Config) -> None:
    """``data.path`` must name a registered dataset or an existing file (checked before a run starts)."""
    path = config.data.path
    if path not in DATASETS and not Path(path).is_file():
        raise ConfigError(f"data.path: '{path}' is neither a registered dataset ({', '.join(DATASETS)}) "
                          f"nor an existing file")


def resolve_paths(config: Config) -> Config:
    """The config with relative file paths made absolute, so a run re-evaluates from any directory."""
    data = config.data
    update = {}
    if data.path not in DATASETS and Path(data.path).is_file():
        update["path"] = str(Path(data.path).resolve())
    for key in ("user_features", "item_features"):
        spec = getattr(data, key)
        if spec is not None and Path(spec.path).is_file():
            update[key] = spec.model_copy(update={"path": str(Path(spec.path).resolve())})
    return config.model_copy(update={"data": data.model_copy(update=update)}) if update else config


def check_vocabularies(paths: RunPaths, prepared: PreparedData) -> None:
    for kind, path, built in (("user", paths.user_vocabulary, prepared.users), ("item", paths.item_vocabulary,
                                                                               prepared.items)):
        saved = Vocabulary.load(path)
        if saved.tokens != built.tokens:
            raise RunError(f"the data changed since the run: the {kind} ids read from data.path differ from "
                           f"'{path}' ({built.size} ids now, {saved.size} saved)")


def require_run(root: str | Path, checkpoint: str | None = None) -> RunPaths:
    """The paths of an existing run directory, checked: the directory, its ``config.yaml`` and,
    when ``checkpoint`` is given, that checkpoint's weights file.

    Raises:
        RunError: naming what is missing and, for a missing checkpoint, why and what exists.
    """
    paths = RunPaths(Path(root))
    if not paths.root.is_dir():
        raise RunError(f"run directory '{paths.root}' does not exist")
    if not paths.config.is_file():
        raise RunError(f"'{paths.root}' is not a tfsoft run directory: config.yaml is missing")
    if checkpoint is None:
        return paths
    weights = paths.checkpoint(checkpoint)
    if weights.is_file():
        return paths
    others = [name for name in CHECKPOINTS if name != checkpoint and paths.checkpoint(name).is_file()]
    hint = f"; --checkpoint {others[0]} exists" if others else ""
    if paths.metrics.is_file():
        raise RunError(f"'{weights}' is missing from a completed run (metrics.json exists, so it was written "
                       f"and later deleted or moved){hint}")
    raise RunError(f"'{weights}' does not exist: the run was interrupted before it wrote a {checkpoint} "
                   f"checkpoint{hint}")


def checkpoint_problem(path: str | Path) -> str | None:
    """Why a ``*.weights.h5`` file cannot be used, or None when it opens, every group and dataset
    in it can be listed, and its size and sha256 match the run's checkpoint manifest (no
    TensorFlow; the weights are not loaded).

    A file cut short (a full disk, an interrupted copy or download) fails to open, in h5py's
    words; a damaged header or group table fails while walking it. Damage inside the weight
    values themselves is found by the checksum (:func:`checksum_problem`) when
    ``checkpoints/manifest.json`` lists the file; runs written before the manifest existed get the
    structural check only."""
    import h5py

    path = Path(path)
    if not path.is_file():
        return "the file does not exist"
    try:
        with h5py.File(path, "r") as handle:
            handle.visititems(lambda name, node: (node.shape, node.dtype) if isinstance(node, h5py.Dataset)
                              else None)
    except Exception as error:  # h5py raises OSError, RuntimeError, KeyError, ValueError
        return str(error) or type(error).__name__
    return checksum_problem(path)


class ChecksumProblem(str):
    """A :func:`checkpoint_problem` found by the checksum manifest (the file reads, but its bytes
    are not the ones training wrote)."""


class ManifestProblem(ChecksumProblem):
    """The checkpoint manifest itself cannot be read, so no checkpoint of the run can be verified."""


#: checkpoints whose checksum matched, keyed by what identifies their bytes (stat and the manifest
#: entry): a file checked twice in one process (``tfsoft export`` checks before opening the run,
#: and again when loading) is hashed once; any write to it changes its mtime and ctime
_VERIFIED: set = set()


def _manifest_entries(path: Path) -> tuple[list[dict], str | None]:
    """(the entries ``path`` may match, a problem with the manifest itself): no entries when there
    is no manifest or it does not list the file."""
    manifest = path.parent / CHECKPOINT_MANIFEST
    if not manifest.exists():
        return [], None
    try:
        files = read_manifest(manifest, CHECKPOINT_MANIFEST_KIND)
    except (OSError, ValueError) as error:
        return [], ManifestProblem(f"its checksums in '{manifest}' cannot be read ({error}); delete that file to load the "
                    f"checkpoints without checksums")
    entry = files.get(path.name)
    if entry is None:
        return [], None
    # "replacing": the file the entry's write was replacing, for a write stopped between the manifest
    # update that announces it and the rename (see record_checkpoint)
    return [entry] + ([entry["replacing"]] if entry.get("replacing") else []), None


def checksum_problem(path: str | Path) -> ChecksumProblem | None:
    """How a checkpoint differs from the size and sha256 that ``checkpoints/manifest.json`` recorded
    when training wrote it; None when it matches, or when no manifest lists it."""
    path = Path(path)
    entries, problem = _manifest_entries(path)
    if problem is not None:
        return problem
    if not entries:
        return None
    info = os.stat(path)
    key = (str(path.resolve()), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino,
           tuple((entry["sha256"], entry["size"]) for entry in entries))
    if key in _VERIFIED:
        return None
    problem = entry_problem(path, entries, path.parent / CHECKPOINT_MANIFEST)
    if problem is not None:
        return ChecksumProblem(f"{problem} when training wrote it")
    _VERIFIED.add(key)
    return None


def record_checkpoint(weights: str | Path, entry: dict, *, pending: bool = False) -> Path:
    """Record a checkpoint's :func:`tfsoft.files.file_entry` in ``checkpoints/manifest.json``
    (rewritten atomically; the other checkpoints' entries are kept).

    A checkpoint write records twice: ``pending=True`` with the new file's entry before it is
    renamed into place (the entry keeps the one it replaces as ``replacing``), then again after
    the rename. A write stopped at any point leaves a file that matches its entry.

    Returns:
        the manifest's path.
    """
    weights = Path(weights)
    manifest = weights.parent / CHECKPOINT_MANIFEST
    try:
        files = read_manifest(manifest, CHECKPOINT_MANIFEST_KIND) if manifest.exists() else {}
    except (OSError, ValueError):
        files = {}  # unreadable: started afresh (it only ever describes this directory's checkpoints)
    entry = {"sha256": entry["sha256"], "size": entry["size"]}
    old = files.get(weights.name)
    if pending and old is not None and (old["sha256"], old["size"]) != (entry["sha256"], entry["size"]):
        entry["replacing"] = {"sha256": old["sha256"], "size": old["size"]}
    files[weights.name] = entry
    return write_manifest(manifest, CHECKPOINT_MANIFEST_KIND, files)


def damaged_checkpoint_error(path: str | Path, problem: str) -> RunError:
    """The RunError of a checkpoint file that exists but cannot be used; it names the file, the
    reason (h5py's words, or the checksum that does not match) and, when the run's other
    checkpoint is intact, that ``--checkpoint <other>`` is."""
    path = Path(path)
    if isinstance(problem, ManifestProblem):
        return RunError(f"checkpoint '{path}' cannot be verified: {problem}")
    which = path.name[: -len(".weights.h5")] if path.name.endswith(".weights.h5") else None
    hint = ""
    if which in CHECKPOINTS:
        other = next(name for name in CHECKPOINTS if name != which)
        other_path = path.with_name(f"{other}.weights.h5")
        if other_path.is_file():
            other_problem = checkpoint_problem(other_path)
            hint = (f"; the {other} checkpoint '{other_path}' is intact: use --checkpoint {other}"
                    if other_problem is None else f"; the {other} checkpoint '{other_path}' is damaged too")
    if isinstance(problem, ChecksumProblem):
        return RunError(f"checkpoint '{path}' is damaged: {problem}; its bytes changed after training (a failing "
                        f"disk, a bad copy or an edit), so its weights cannot be trusted{hint}")
    return RunError(f"checkpoint '{path}' is damaged and cannot be read ({problem}); it was probably cut short "
                    f"(a full disk, an interrupted copy) or overwritten{hint}")


def check_checkpoint(paths: RunPaths, checkpoint: str) -> Path:
    """The path of ``checkpoint`` (``best``/``last``) of a run, checked to exist (:func:`require_run`),
    to be a readable weights file and to match its checksum (:func:`checkpoint_problem`); before
    TensorFlow loads.

    Raises:
        RunError: the file is missing (with the cause) or damaged (with the intact alternative).
    """
    require_run(paths.root, checkpoint)
    weights = paths.checkpoint(checkpoint)
    problem = checkpoint_problem(weights)
    if problem is not None:
        raise damaged_checkpoint_error(weights, problem)
    return weights
