"""``tfsoft export`` on real trained runs: layout, answers equal to the in-process model, recall floor."""

import json

import numpy as np
import pytest

from tfsoft.backend import tf
from tfsoft.cli import main
from tfsoft.errors import ExportError
from tfsoft.export import export_run, list_versions, read_warmup_requests
from tfsoft.export.servable import PAD_ID

from tests.export.reference import InProcess


@pytest.fixture(scope="module")
def history_model(history_run):
    return InProcess.load(history_run)


@pytest.fixture(scope="module")
def brute_force_export(history_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("exports") / "model"
    result = export_run(history_run, base, index="brute_force", k=20)
    return base, result


def ranked(a, b, scores, atol=1e-5):
    """Same lists, allowing neighbours with (numerically) tied scores to swap."""
    if a == b:
        return True
    return all(x == y or abs(s1 - s2) < atol for x, y, s1, s2 in zip(a, b, scores, scores[1:] + [scores[-1]]))


def test_export_writes_a_tf_serving_version_directory(brute_force_export):
    base, result = brute_force_export
    version = base / "1"
    assert list_versions(base) == [1] and result.version == 1 and result.path == str(version)
    for name in ("saved_model.pb", "variables/variables.index", "assets/item_ids.txt", "assets/user_ids.txt",
                 "assets.extra/tf_serving_warmup_requests", "assets.extra/tfsoft_export.json"):
        assert (version / name).is_file(), name
    requests = read_warmup_requests(version / "assets.extra" / "tf_serving_warmup_requests")
    assert len(requests) == result.warmup_records == 100
    assert {r.model_spec.signature_name for r in requests} == {"serving_default", "top_k_excluding"}
    metadata = json.loads((version / "assets.extra" / "tfsoft_export.json").read_text())
    assert metadata["index"] == "brute_force" and metadata["k"] == 20 and metadata["inputs"] == ["history"]
    assert result.recall == 1.0 and result.signatures == ["candidate_embedding", "query_embedding",
                                                          "serving_default", "top_k_excluding"]


def test_exported_signatures_answer_like_the_in_process_model(brute_force_export, history_model):
    base, _ = brute_force_export
    loaded = tf.saved_model.load(str(base / "1"))
    users, histories = history_model.queries(count=16)
    want, scores = history_model.top_k(users, histories, 20)
    padded = np.full((16, max(map(len, histories))), PAD_ID["int64"], np.int64)
    for i, h in enumerate(histories):
        padded[i, :len(h)] = h
    got = loaded.signatures["serving_default"](history=tf.constant(padded))
    for g, w, s in zip(got["item_ids"].numpy().tolist(), want, scores.tolist()):
        assert ranked(g, w, s)
    np.testing.assert_allclose(got["scores"].numpy(), scores, rtol=1e-4, atol=1e-5)

    # right- or left-padding, unknown ids and over-long histories give the same answer
    left = np.full_like(padded, 123456789)
    for i, h in enumerate(histories):
        left[i, left.shape[1] - len(h):] = h
    again = loaded.signatures["serving_default"](history=tf.constant(left))
    np.testing.assert_array_equal(again["item_ids"].numpy(), got["item_ids"].numpy())

    exclude = [w[:3] for w in want]
    want_ex, _ = history_model.top_k(users, histories, 20, exclude=exclude)
    got_ex = loaded.signatures["top_k_excluding"](history=tf.constant(padded),
                                                  exclude_item_ids=tf.constant(np.array(exclude, np.int64)))
    assert got_ex["item_ids"].numpy().tolist()[0][:5] == want_ex[0][:5]
    for row, excluded in zip(got_ex["item_ids"].numpy().tolist(), exclude):
        assert not set(row) & set(excluded)

    query = loaded.signatures["query_embedding"](history=tf.constant(padded))["embedding"].numpy()
    items = tf.constant(np.array(want[0][:4] + [987654321], np.int64))
    candidate = loaded.signatures["candidate_embedding"](item_ids=items)
    np.testing.assert_array_equal(candidate["known"].numpy(), [True] * 4 + [False])
    np.testing.assert_allclose(query[0] @ candidate["embedding"].numpy()[:4].T, scores[0, :4], rtol=1e-4, atol=1e-5)


def test_user_id_tower_exports_precomputed_user_vectors(user_run, tmp_path):
    model = InProcess.load(user_run)
    result = export_run(user_run, tmp_path, k=10)
    assert result.inputs == ["user_id"]
    loaded = tf.saved_model.load(result.path)
    users, histories = model.queries(count=6)
    want, scores = model.top_k(users, histories, 10)
    got = loaded.signatures["serving_default"](user_id=tf.constant(np.array(users + [-42], np.int64)))
    for g, w, s in zip(got["item_ids"].numpy().tolist(), want, scores.tolist()):
        assert ranked(g, w, s)
    assert len(got["item_ids"].numpy()[-1]) == 10  # an unknown user gets the OOV vector, not an error


def test_scann_export_reaches_the_recall_floor_or_is_refused(history_run, tmp_path, capsys):
    result = export_run(history_run, tmp_path, index="scann", k=10)
    assert result.recall >= 0.95 and result.scann["tuning"][-1]["recall"] == pytest.approx(result.recall)
    with pytest.raises(ExportError, match=r"finds 0\.\d+ of the exact top-50 .* below export.min_recall 0.999"):
        export_run(history_run, tmp_path, index="scann", k=50, min_recall=0.999,
                   scann={"num_leaves": 60, "num_leaves_to_search": 1})
    assert list_versions(tmp_path) == [1]  # the refused export published nothing
    forced = export_run(history_run, tmp_path, index="scann", k=50, min_recall=0.999, allow_low_recall=True,
                        scann={"num_leaves": 60, "num_leaves_to_search": 1})
    assert forced.version == 2 and forced.recall < 0.999
    assert "WARNING: the scann index finds" in capsys.readouterr().err


def test_export_cli_reports_and_refuses_an_existing_version(history_run, tmp_path, capsys):
    assert main(["export", "--run-dir", str(history_run), "--export-dir", str(tmp_path), "--k", "5",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["version"] == 1 and report["k"] == 5
    assert main(["export", "--run-dir", str(history_run), "--export-dir", str(tmp_path), "--version", "1"]) == 2
    assert "version 1 already exists" in capsys.readouterr().err
    assert main(["export", "--run-dir", str(tmp_path / "nope"), "--export-dir", str(tmp_path)]) == 2
    assert "is not a tfsoft run directory" in capsys.readouterr().err


@pytest.mark.parametrize("overrides, inputs", [
    (["model.query_tower=sasrec"], ["history"]),
    (["model.use_user_embedding=true"], ["user_id", "history"]),
])
def test_sequence_and_two_input_towers_export_and_answer_like_the_checkpoint(tmp_path, overrides, inputs):
    from tests.conftest import train_small_run

    run = train_small_run(tmp_path / "run", "train.steps_per_epoch=10", *overrides)
    result = export_run(run, tmp_path / "export", k=10)
    assert result.inputs == inputs
    model = InProcess.load(run)
    users, histories = model.queries(count=5, start=7)
    want, scores = model.top_k(users, histories, 10)
    feed = {"history": tf.constant(np.array([h[-30:] + [-1] * (30 - len(h[-30:])) for h in histories], np.int64))}
    if "user_id" in inputs:
        feed["user_id"] = tf.constant(np.array(users, np.int64))
    got = tf.saved_model.load(result.path).signatures["serving_default"](**feed)
    for g, w, s in zip(got["item_ids"].numpy().tolist(), want, scores.tolist()):
        assert ranked(g, w, s)
