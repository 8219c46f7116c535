"""``tfsoft retrieve --runner beam`` on Beam's DirectRunner gives the in-process output."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("apache_beam")

from tfsoft.batch.beam import SavedModelHandler, run_beam  # noqa: E402
from tfsoft.batch.job import RetrieveOptions, run_retrieval  # noqa: E402
from tfsoft.batch.output import OutputError  # noqa: E402
from tfsoft.cli import main  # noqa: E402

from tests.batch.helpers import assert_same_results, read_output, read_rejects, users_table  # noqa: E402


def _with_bad_rows(table: pa.Table) -> pa.Table:
    bad = pa.table({"user_id": pa.array([None, 5], table.schema.field("user_id").type),
                    "history": pa.array([[], None], table.schema.field("history").type)})
    return pa.concat_tables([table, bad])


@pytest.mark.parametrize("exclude_seen", [False, True])
def test_direct_runner_equals_in_process(history_export, tmp_path, exclude_seen):
    pq.write_table(_with_bad_rows(users_table(history_export, 60, seed=3)), tmp_path / "users.parquet")
    options = dict(model=str(history_export.base), input=str(tmp_path / "users.parquet"), k=6, batch_size=16,
                   exclude_seen=exclude_seen, progress=False)
    local = run_retrieval(RetrieveOptions(output=str(tmp_path / "local"), part_size=25, **options))
    beam = run_beam(RetrieveOptions(output=str(tmp_path / "beam"), **options), ["--runner=DirectRunner"])
    assert_same_results(read_output(tmp_path / "beam"), read_output(tmp_path / "local"))
    assert beam.counts == local.counts and beam.counts["rows_rejected"] == 2
    assert read_rejects(tmp_path / "beam").select(["row", "reason"]).equals(
        read_rejects(tmp_path / "local").select(["row", "reason"]))
    success = json.loads((tmp_path / "beam" / "_SUCCESS").read_text())
    assert success["counts"] == local.counts and success["model"]["version"] == 1
    assert not (tmp_path / "beam" / "_beam").exists()
    again = run_beam(RetrieveOptions(output=str(tmp_path / "beam"), **options))
    assert again.noop
    with pytest.raises(OutputError, match="runner beam"):  # one output directory, one runner
        run_retrieval(RetrieveOptions(output=str(tmp_path / "beam"), part_size=25, **options))
    with pytest.raises(OutputError, match="runner local"):
        run_beam(RetrieveOptions(output=str(tmp_path / "local"), **options))


def test_string_export_through_the_cli(string_export, tmp_path):
    pq.write_table(pa.table({"user_id": ["u1", "u9", "stranger", "u4"]}), tmp_path / "users.parquet")
    args = ["retrieve", "--model", str(string_export.base), "--input", str(tmp_path / "users.parquet"), "--k", "4",
            "--no-progress"]
    assert main(args + ["--output", str(tmp_path / "local")]) == 0
    assert main(args + ["--output", str(tmp_path / "beam"), "--runner", "beam", "--",
                        "--runner=DirectRunner"]) == 0
    got = read_output(tmp_path / "beam")
    assert_same_results(got, read_output(tmp_path / "local"))
    assert got.column("user_id").to_pylist() == ["stranger", "u1", "u4", "u9"]
    assert got.column("source").to_pylist() == ["popular", "model", "model", "model"]
    items, scores = string_export.reference("u9", k=4)
    assert got.to_pylist()[3]["item_ids"] == items
    np.testing.assert_allclose(got.to_pylist()[3]["scores"], scores, atol=1e-5)


def test_handler_calls_the_named_signature_and_shares_large_models(history_export):
    handler = SavedModelHandler(str(history_export.base / "1"), "top_k_excluding", 3, "int64", "int64",
                                max_batch_size=8, large_model=True)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 1, "max_batch_size": 8}
    assert handler.share_model_across_processes() and handler.model_copies() == 1
    model = handler.load_model()
    history = history_export.items[:4]
    (result,) = handler.run_inference([{"user_id": 1, "history": history}], model)
    items, scores = history_export.reference(1, history, 3, exclude=history)
    assert result.inference[0] == items
    np.testing.assert_allclose(result.inference[1], scores, atol=1e-5)
