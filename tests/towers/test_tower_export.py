"""A new tower through ``tfsoft export``: the served SavedModel answers like the in-process model.

Reuses the exporter's own check (``tests/export/test_exporter.py``: a briefly trained run,
exported, its ``serving_default`` top-10 for real users against the run's Keras model) on
NARM trained with a query per position (the servable keeps the last one). One tower, to keep
the suite fast: the export path is the same for every history tower, and each tower's own
SavedModel round trip (dynamic batch and history length, so Caser's cut and padding too) is
in ``test_sequence_towers.py``; the graph towers export as a precomputed user table, as LightGCN.
"""

from tests.export.test_exporter import (
    test_sequence_and_two_input_towers_export_and_answer_like_their_reference as export_answers_like_the_model,
)


def test_exported_narm_answers_like_the_in_process_model(tmp_path):
    export_answers_like_the_model(tmp_path, ["model.query_tower=narm", "model.query_tower.hidden_units=16",
                                             "data.example_mode=window", "model.embedding_dim=16",
                                             "train.steps_per_epoch=3"], ["history"])
