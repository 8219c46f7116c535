"""Answer a query with the newest exported version in a local export directory, through the
same loader ``tfsoft serve`` uses (exactly what TF Serving would run), without a server."""

from __future__ import annotations

from tfsoft.errors import RunError
from tfsoft.serving.client import ids_array
from tfsoft.serving.repository import ModelRepository


def recommend_from_export(export_dir, raw_user, raw_history: list, k: int, exclude_seen: bool) -> dict:
    """Top-``k`` raw item ids for one user from the newest version in ``export_dir``.

    Feeds the signature's own inputs (``user_id`` and/or ``history``; ``exclude_item_ids`` =
    the history with ``exclude_seen``, through ``top_k_excluding``).

    Returns:
        ``{"items": [...], "scores": [...], "export_version": V}``.
    """
    from tfsoft.topk import LOWEST_SCORE

    repository = ModelRepository(export_dir, "local", poll_seconds=0)
    if not repository.refresh():
        raise RunError(f"'{export_dir}' holds no loadable exported version; write one with tfsoft export")
    loaded = repository.get("local")
    signature = "top_k_excluding" if exclude_seen else "serving_default"
    inputs = {}
    for name in loaded.input_specs(signature):
        if name == "user_id":
            inputs[name] = ids_array([raw_user])
        elif name in ("history", "exclude_item_ids"):
            inputs[name] = ids_array(raw_history).reshape(1, -1)
    outputs = loaded.predict(signature, inputs)
    exported_k = outputs["item_ids"].shape[1]
    if k > exported_k:
        raise RunError(f"version {loaded.version} of '{export_dir}' returns the top {exported_k}; ask for "
                       f"--k {exported_k} or less, or export again with --k {k}")
    items, scores = outputs["item_ids"][0][:k].tolist(), outputs["scores"][0][:k].tolist()
    kept = [(item.decode() if isinstance(item, bytes) else item, score) for item, score in zip(items, scores)
            if score > LOWEST_SCORE]
    return {"items": [item for item, _ in kept], "scores": [float(score) for _, score in kept],
            "export_version": loaded.version}
