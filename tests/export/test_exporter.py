"""``tfsoft export`` on real trained runs: layout, answers equal to an independent NumPy
reference (:mod:`tests.export.reference`), recall floor."""

import json

import numpy as np
import pytest

from tfsoft.backend import tf
from tfsoft.cli import main
from tfsoft.errors import ExportError
from tfsoft.export import export_run, list_versions, read_warmup_requests
from tfsoft.export.servable import PAD_ID

from tests.export.reference import NumpyReference, Unsupported, real_queries, same_ranking


@pytest.fixture(scope="module")
def history_model(history_run):
    return NumpyReference.load(history_run)


@pytest.fixture(scope="module")
def brute_force_export(history_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("exports") / "model"
    result = export_run(history_run, base, index="brute_force", k=20)
    return base, result


class InProcessModel:
    """The run's Keras model in this process: the reference only for query towers the NumPy
    reference cannot cheaply reproduce (SASRec's attention blocks). It shares tfsoft's data and
    model code with the exporter, so it checks the export path (SavedModel, vocabularies,
    history packing), not the tower maths."""

    def __init__(self, run_dir):
        from tfsoft.loaded_run import open_run

        self.run = open_run(run_dir)

    def top_k(self, users, histories, k):
        from tfsoft.data import Ragged, query_features

        prepared, model = self.run.prepared, self.run.model
        history = Ragged.from_rows([prepared.items.lookup(h) for h in histories])
        query = model(query_features(prepared.users.lookup(users), history, self.run.max_history)).numpy()
        scores = query.astype(np.float64) @ model.candidate_embeddings().numpy().astype(np.float64).T
        scores[:, 0] = -np.inf
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [prepared.items.ids(row) for row in top], np.take_along_axis(scores, top, axis=1)


def test_same_ranking_allows_only_tied_swaps_and_catches_a_wrong_last_item():
    want, scores = [10, 11, 12, 13], [0.9, 0.5, 0.5, 0.1]
    assert same_ranking(want, want, scores)
    assert same_ranking([10, 12, 11, 13], want, scores)  # 11 and 12 are tied
    assert not same_ranking([11, 10, 12, 13], want, scores)  # 0.9 and 0.5 are not
    assert not same_ranking([10, 11, 12, 99], want, scores)  # a wrong last item (the old helper passed it)
    assert not same_ranking([99, 11, 12, 13], want, scores)
    assert not same_ranking([10, 11, 11, 13], want, scores)  # a repeated item
    assert not same_ranking([10, 11, 12], want, scores)
    catalog = {10: 0.9, 11: 0.5, 12: 0.5, 13: 0.1, 98: 0.1, 99: 0.05}
    assert same_ranking([10, 11, 12, 98], want, scores, catalog)  # 98 ties with the k-th item
    assert not same_ranking([10, 11, 12, 99], want, scores, catalog)  # 99 does not


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


def test_exported_signatures_answer_like_the_numpy_reference(brute_force_export, history_model):
    base, _ = brute_force_export
    loaded = tf.saved_model.load(str(base / "1"))
    users, histories = history_model.queries(count=16)
    assert max(map(len, histories)) > 20  # histories longer than max_history: the export keeps the last 20
    want, scores = history_model.top_k(users, histories, 20)
    padded = np.full((16, max(map(len, histories))), PAD_ID["int64"], np.int64)
    for i, h in enumerate(histories):
        padded[i, :len(h)] = h
    got = loaded.signatures["serving_default"](history=tf.constant(padded))
    for g, w, s, c in zip(got["item_ids"].numpy().tolist(), want, scores, history_model.catalog(users, histories)):
        assert same_ranking(g, w, s, c), (g, w)
    np.testing.assert_allclose(got["scores"].numpy(), scores, rtol=1e-4, atol=1e-5)

    # right- or left-padding, unknown ids and over-long histories give the same answer
    left = np.full_like(padded, 123456789)
    for i, h in enumerate(histories):
        left[i, left.shape[1] - len(h):] = h
    again = loaded.signatures["serving_default"](history=tf.constant(left))
    np.testing.assert_array_equal(again["item_ids"].numpy(), got["item_ids"].numpy())

    exclude = [w[:3] + h[-5:] + [PAD_ID["int64"], 987654321] for w, h in zip(want, histories)]  # padding, unknown id
    want_ex, scores_ex = history_model.top_k(users, histories, 20, exclude=exclude)
    got_ex = loaded.signatures["top_k_excluding"](history=tf.constant(padded),
                                                  exclude_item_ids=tf.constant(np.array(exclude, np.int64)))
    for g, w, s, c in zip(got_ex["item_ids"].numpy().tolist(), want_ex, scores_ex,
                          history_model.catalog(users, histories, exclude)):
        assert same_ranking(g, w, s, c), (g, w)
    np.testing.assert_allclose(got_ex["scores"].numpy(), scores_ex, rtol=1e-4, atol=1e-5)
    for row, excluded in zip(got_ex["item_ids"].numpy().tolist(), exclude):
        assert not set(row) & set(excluded)

    query = loaded.signatures["query_embedding"](history=tf.constant(padded))["embedding"].numpy()
    items = tf.constant(np.array(want[0][:4] + [987654321], np.int64))
    candidate = loaded.signatures["candidate_embedding"](item_ids=items)
    np.testing.assert_array_equal(candidate["known"].numpy(), [True] * 4 + [False])
    np.testing.assert_allclose(query[0] @ candidate["embedding"].numpy()[:4].T, scores[0, :4], rtol=1e-4, atol=1e-5)


def test_user_id_tower_exports_precomputed_user_vectors(user_run, tmp_path):
    model = NumpyReference.load(user_run)
    assert model.tower == "id"
    result = export_run(user_run, tmp_path, k=10)
    assert result.inputs == ["user_id"]
    loaded = tf.saved_model.load(result.path)
    users, histories = model.queries(count=6)
    want, scores = model.top_k(users, histories, 10)
    got = loaded.signatures["serving_default"](user_id=tf.constant(np.array(users + [-42], np.int64)))
    for g, w, s, c in zip(got["item_ids"].numpy().tolist(), want, scores, model.catalog(users, histories)):
        assert same_ranking(g, w, s, c), (g, w)
    np.testing.assert_allclose(got["scores"].numpy()[:-1], scores, rtol=1e-4, atol=1e-5)
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
    err = capsys.readouterr().err  # the wording moved with the run-directory checks (tfsoft.runs.require_run)
    assert "nope" in err and ("is not a tfsoft run directory" in err or "does not exist" in err), err


@pytest.mark.parametrize("overrides, inputs", [
    (["model.query_tower=sasrec"], ["history"]),
    (["model.query_tower.use_user_embedding=true"], ["user_id", "history"]),
])
def test_sequence_and_two_input_towers_export_and_answer_like_their_reference(tmp_path, overrides, inputs):
    """History pooling with a user embedding: the NumPy reference; SASRec: the in-process model
    (:class:`InProcessModel`; NumPy does not re-implement attention)."""
    from tests.conftest import train_small_run

    run = train_small_run(tmp_path / "run", "train.steps_per_epoch=10", *overrides)
    result = export_run(run, tmp_path / "export", k=10)
    assert result.inputs == inputs
    try:
        model, catalog = NumpyReference.load(run), True
    except Unsupported:
        model, catalog = InProcessModel(run), False
    assert catalog == (inputs == ["user_id", "history"])
    users, histories = real_queries(count=5, start=7)
    want, scores = model.top_k(users, histories, 10)
    feed = {"history": tf.constant(np.array([h[-30:] + [-1] * (30 - len(h[-30:])) for h in histories], np.int64))}
    if "user_id" in inputs:
        feed["user_id"] = tf.constant(np.array(users, np.int64))
    got = tf.saved_model.load(result.path).signatures["serving_default"](**feed)
    catalogs = model.catalog(users, histories) if catalog else [None] * len(users)
    for g, w, s, c in zip(got["item_ids"].numpy().tolist(), want, scores, catalogs):
        assert same_ranking(g, w, s, c), (g, w)
    np.testing.assert_allclose(got["scores"].numpy(), scores, rtol=1e-4, atol=1e-5)
