"""Artefacts are verified before use (issue 17): a run's checkpoints and an export's files carry
sha256 checksums in a manifest written last and atomically; ``evaluate``, ``export`` and
``recommend`` check them and name the damaged file, and a damaged ``best`` suggests
``--checkpoint last`` when that one is intact.

One tiny run (3 steps, d = 8) is trained and exported once for the module, in fresh processes
through the console script; tests that damage them work on copies.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tfsoft.cli import main
from tfsoft.errors import ExportError
from tfsoft.export.manifest import MANIFEST_PATH, verify_export
from tfsoft.files import file_entry
from tfsoft.runs import checksum_problem, record_checkpoint

from tests.cli_helpers import (CONFIG, ROOT, TINY, assert_damaged_best_is_refused_and_last_works, error_of,
                               run_tfsoft as _tfsoft, subprocess_env as _env)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run directory, export base path holding version 1 of it)."""
    root = tmp_path_factory.mktemp("manifests")
    run, export = root / "run", root / "export"
    done = _tfsoft("train", "--config", CONFIG, "--run-dir", run, *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    done = _tfsoft("export", "--run-dir", run, "--export-dir", export, "--k", "20")
    assert done.returncode == 0, done.stderr[-3000:]
    return run, export


@pytest.fixture
def run_copy(trained, tmp_path):
    """A copy of the trained run that a test may damage."""
    return Path(shutil.copytree(trained[0], tmp_path / "run"))


@pytest.fixture
def export_copy(trained, tmp_path):
    """A copy of the export base path that a test may damage."""
    return Path(shutil.copytree(trained[1], tmp_path / "export"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_weight_byte(path: Path) -> None:
    """Flip one bit in the middle of the largest weight array of a ``.weights.h5`` file: its HDF5
    structure stays intact (it opens and every dataset reads), only a weight value changes."""
    with h5py.File(path, "r") as handle:
        arrays = []
        handle.visititems(lambda name, node: arrays.append((node.nbytes, node.id.get_offset(), name))
                          if isinstance(node, h5py.Dataset) else None)
        nbytes, offset, name = max(arrays)
        before = handle[name][()]
    data = bytearray(path.read_bytes())
    data[offset + nbytes // 2] ^= 0x04
    path.write_bytes(bytes(data))
    with h5py.File(path, "r") as handle:  # still a well-formed file with one changed value
        after = handle[name][()]
    assert after.shape == before.shape and np.sum(after != before) == 1


def swap_two_ids(path: Path) -> None:
    """Swap two neighbouring ids of the same length in an id file (``assets/item_ids.txt``): same
    size, still unique ids, so TensorFlow loads the version and answers with wrong item ids."""
    lines = path.read_bytes().split(b"\n")
    i = next(i for i in range(len(lines) // 2, len(lines) - 1)
             if len(lines[i]) == len(lines[i + 1]) > 0 and lines[i] != lines[i + 1])
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    path.write_bytes(b"\n".join(lines))


def test_train_writes_a_checkpoint_manifest_that_matches_the_files(trained):
    run, _ = trained
    manifest = json.loads((run / "checkpoints" / "manifest.json").read_text())
    assert {key: manifest[key] for key in ("format", "version", "algorithm")} == {
        "format": "tfsoft-checkpoints", "version": 1, "algorithm": "sha256"}
    assert set(manifest["files"]) == {"best.weights.h5", "last.weights.h5"}
    for name, entry in manifest["files"].items():
        path = run / "checkpoints" / name
        assert entry == {"sha256": sha256(path), "size": path.stat().st_size}, name
    assert not list(run.rglob(".*.tmp*")), "temporary files left behind"


def test_a_flipped_byte_inside_a_weight_array_is_named_and_last_is_suggested(run_copy, capsys):
    best, last = (run_copy / "checkpoints" / f"{name}.weights.h5" for name in ("best", "last"))
    flip_weight_byte(best)
    assert_damaged_best_is_refused_and_last_works(
        run_copy, capsys, 2, f"checkpoint '{best}' is damaged: its sha256 is ",
        f"recorded in '{run_copy / 'checkpoints' / 'manifest.json'}' when training wrote it")

    flip_weight_byte(last)
    error = error_of(capsys, "evaluate", "--run-dir", run_copy, "--checkpoint", "last")
    assert f"checkpoint '{last}' is damaged: its sha256 is " in error, error
    assert f"the best checkpoint '{best}' is damaged too" in error and "use --checkpoint" not in error, error


def test_a_checkpoint_of_another_size_is_named_by_its_size(run_copy, capsys):
    best = run_copy / "checkpoints" / "best.weights.h5"
    size = best.stat().st_size
    with open(best, "ab") as handle:  # trailing bytes: HDF5 still opens it
        handle.write(b"\0" * 16)
    error = error_of(capsys, "evaluate", "--run-dir", run_copy)
    assert f"checkpoint '{best}' is damaged: it is {size + 16} bytes, not the {size} recorded in " in error, error


_IN_PROCESS = "import sys; from tfsoft.cli import main; code = main(sys.argv[1:]); print(code, 'tensorflow' in sys.modules)"


def test_a_changed_checkpoint_is_refused_before_tensorflow_loads(run_copy):
    flip_weight_byte(run_copy / "checkpoints" / "best.weights.h5")
    for argv in (["evaluate", "--run-dir", run_copy],
                 ["export", "--run-dir", run_copy, "--export-dir", run_copy.parent / "export"],
                 ["recommend", "--run-dir", run_copy, "--user", "2"]):
        done = subprocess.run([sys.executable, "-c", _IN_PROCESS, *map(str, argv)], capture_output=True, text=True,
                              timeout=120, cwd=ROOT, env=_env())
        assert done.stdout.split() == ["2", "False"], (argv, done.stdout, done.stderr[-2000:])
        assert "best.weights.h5' is damaged: its sha256 is " in done.stderr, done.stderr


def test_an_unreadable_manifest_is_named_and_a_run_without_one_gets_the_structural_check(run_copy, capsys):
    manifest = run_copy / "checkpoints" / "manifest.json"
    manifest.write_text('{"format": "tfsoft-checkpoints", "version": 1, "files": ')
    error = error_of(capsys, "evaluate", "--run-dir", run_copy, "--split", "test")
    assert f"checkpoint '{run_copy / 'checkpoints' / 'best.weights.h5'}' cannot be verified: its checksums in " \
           f"'{manifest}' cannot be read (it is not valid JSON" in error and "delete that file" in error, error

    manifest.unlink()  # as a run written before manifests existed: it loads, with the structural check only
    capsys.readouterr()
    assert main(["evaluate", "--run-dir", str(run_copy), "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["num_queries"] > 0


def test_a_checkpoint_write_stopped_anywhere_leaves_a_file_that_matches_the_manifest(tmp_path):
    """record_checkpoint's two steps around the rename: announce (pending) and confirm."""
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    weights, staged = checkpoints / "last.weights.h5", checkpoints / ".last.tmp"
    weights.write_bytes(b"epoch 1 weights")
    record_checkpoint(weights, file_entry(weights))
    assert checksum_problem(weights) is None

    staged.write_bytes(b"epoch 2 weights, longer")
    record_checkpoint(weights, file_entry(staged), pending=True)
    assert checksum_problem(weights) is None  # stopped before the rename: the old file is still fine
    os.replace(staged, weights)
    assert checksum_problem(weights) is None  # stopped after the rename: the new file is fine
    record_checkpoint(weights, file_entry(weights))
    assert checksum_problem(weights) is None

    weights.write_bytes(b"epoch 1 weights")  # the replaced file is accepted no more once confirmed
    assert "bytes, not the 23 recorded in" in checksum_problem(weights)
    weights.write_bytes(b"epoch 2 weights, LONGER")
    assert "its sha256 is " in checksum_problem(weights)


# ---------------------------------------------------------------------------------- exports
def test_export_writes_a_manifest_of_every_other_file_of_the_version(trained):
    _, export = trained
    version = export / "1"
    manifest = json.loads((version / MANIFEST_PATH).read_text())
    assert {key: manifest[key] for key in ("format", "version", "algorithm")} == {
        "format": "tfsoft-export", "version": 1, "algorithm": "sha256"}
    files = sorted(path.relative_to(version).as_posix() for path in version.rglob("*") if path.is_file())
    assert sorted(manifest["files"]) == [name for name in files if name != MANIFEST_PATH]
    assert {"saved_model.pb", "variables/variables.index", "assets/item_ids.txt",
            "assets.extra/tfsoft_export.json"} <= set(manifest["files"])
    for name, entry in manifest["files"].items():
        assert entry == {"sha256": sha256(version / name), "size": (version / name).stat().st_size}, name
    assert json.loads((version / "assets.extra" / "tfsoft_export.json").read_text())["manifest"] == MANIFEST_PATH
    checked = verify_export(version)
    assert checked.verified and checked.files == len(manifest["files"])
    assert checked.size_bytes == sum(entry["size"] for entry in manifest["files"].values())


def test_verify_export_names_the_damaged_missing_or_unlisted_file(export_copy):
    version = export_copy / "1"
    manifest = version / MANIFEST_PATH

    def refused(*fragments):
        with pytest.raises(ExportError) as caught:
            verify_export(version)
        assert all(fragment in str(caught.value) for fragment in fragments), str(caught.value)

    items = version / "assets" / "item_ids.txt"  # TensorFlow would load it and answer wrong ids
    original = items.read_bytes()
    swap_two_ids(items)
    refused(f"'{items}' is damaged: its sha256 is ", f"recorded in '{manifest}'", "Export the run again")
    items.write_bytes(original)
    verify_export(version)

    data = version / "variables" / "variables.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-10])
    refused(f"'{data}' is damaged: it is ")
    data.unlink()
    refused(f"'{data}' is missing")
    shutil.rmtree(version)
    with pytest.raises(ExportError, match="does not exist"):
        verify_export(version)


def test_verify_export_refuses_added_files_and_a_lost_manifest_and_passes_old_exports(export_copy):
    version = export_copy / "1"
    manifest = version / MANIFEST_PATH
    stray = version / "variables" / "notes.txt"
    stray.write_text("added later")
    with pytest.raises(ExportError, match=f"'{stray}' was not written by the export"):
        verify_export(version)
    stray.unlink()

    manifest.write_text("{}")
    with pytest.raises(ExportError, match="cannot be verified: its checksum manifest .* cannot be read \\(it is "
                                          "not a tfsoft-export manifest\\)"):
        verify_export(version)
    manifest.unlink()  # tfsoft_export.json says the export wrote one
    with pytest.raises(ExportError, match="checksum manifest .*tfsoft_manifest.json' is missing"):
        verify_export(version)

    metadata = version / "assets.extra" / "tfsoft_export.json"  # an export from before manifests existed
    payload = json.loads(metadata.read_text())
    del payload["manifest"]
    metadata.write_text(json.dumps(payload))
    assert not verify_export(version).verified


def test_recommend_names_a_damaged_file_of_the_exported_version(trained, export_copy, capsys):
    run, _ = trained
    argv = ["recommend", "--run-dir", run, "--user", "2", "--k", "5", "--export-dir", export_copy]
    capsys.readouterr()
    assert main([*map(str, argv)]) == 0 and "answered by exported version 1" in capsys.readouterr().out
    items = export_copy / "1" / "assets" / "item_ids.txt"
    swap_two_ids(items)
    error = error_of(capsys, *argv)
    assert f"exported version '{export_copy / '1'}' does not match its checksum manifest: '{items}' is damaged: " \
           f"its sha256 is " in error, error


def test_the_server_does_not_serve_a_damaged_version_and_names_the_file(export_copy):
    """tfsoft serve checks an export's manifest before loading it (the version stays END, with
    the file named, and is retried once its directory changes)."""
    from tfsoft.serving.repository import ModelRepository

    version = export_copy / "1"
    variables = next((version / "variables").glob("variables.data-*"))
    data = bytearray(variables.read_bytes())
    data[len(data) // 2] ^= 0x01
    variables.write_bytes(bytes(data))
    repository = ModelRepository(export_copy, "recs", poll_seconds=0)
    assert repository.refresh() == []
    (message,) = repository.failures().values()
    assert str(variables) in message and "damaged" in message
