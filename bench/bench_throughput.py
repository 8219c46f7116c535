"""Training throughput: tfsoft's in-batch loss vs TensorFlow Recommenders' ``tasks.Retrieval``.

Identical towers (history mean-pooling query tower over the last 20 items, item-id candidate
tower, d = 64, tied embeddings), identical batches of lastfm_small next-item examples, same
optimizer (``keras.optimizers.Adam``, as TFRS users write it, unless a variant says otherwise),
same Keras settings (no ``jit_compile``, ``steps_per_execution`` = 1, TF's
default threading) for every variant. Each variant trains in its own fresh process, the
processes of a round are interleaved (order reversed every other round), and epochs are timed
inside one ``fit`` (first epoch = warm-up, left out). Variants:

* ``tfrs_retrieval``: ``tfrs.tasks.Retrieval()`` as shipped (dot product, no temperature, no
  masking): the TFRS baseline.
* ``tfsoft_in_batch_dot``: tfsoft's in-batch softmax with the same maths (dot, τ = 1, no masking).
* ``tfsoft_ssm``: tfsoft's default SSM: cosine (both towers L2-normalised), τ = 0.1, duplicate
  positives masked: more maths per step than the TFRS baseline.
* ``tfrs_retrieval_ssm``: the same SSM maths in TFRS (normalised towers,
  ``Retrieval(temperature=0.1, remove_accidental_hits=True)``): like-for-like with ``tfsoft_ssm``.
* ``tfsoft_ssm_logq``: ``tfsoft_ssm`` plus the logQ correction, for its overhead.
* ``tfsoft_ssm_sparse_gradients``: ``tfsoft_ssm`` with Keras' sparse table gradients
  (``dense_gradients="never"``): what :mod:`tfsoft.gradients` saves.
* ``tfsoft_ssm_fused_adam``: ``tfsoft_ssm`` with ``tfsoft train``'s ``optimizer: adam`` (tf_keras
  legacy Adam, fused ``ResourceApplyAdam`` on the dense table gradients).
* ``tfrs_retrieval_fused_adam``: the TFRS baseline given that same optimizer (its train_step
  passes sparse slices, so the fused kernel never runs).

    .venv/bin/python bench/bench_throughput.py --rounds 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import EpochTimer, machine, write_result  # noqa: E402

import tensorflow_recommenders as tfrs  # noqa: E402

from tfsoft import losses  # noqa: E402
from tfsoft.backend import keras, tf  # noqa: E402
from tfsoft.data import SplitSpec, load_dataset, make_dataset, next_item_examples, prepare  # noqa: E402
from tfsoft.model import TwoTowerModel  # noqa: E402
from tfsoft.towers import HistoryPoolingTower, IdTower  # noqa: E402


class TfrsRetrieval(tfrs.Model):
    """The same towers trained by TFRS's retrieval task (in-batch softmax).

    ``ssm=True``: cosine similarity (both towers' outputs L2-normalised, as tfsoft does), τ and
    TFRS's accidental-hit removal (the same duplicate-positive masking as tfsoft's).
    """

    def __init__(self, query_tower, candidate_tower, ssm: bool = False, temperature: float = 0.1):
        super().__init__()
        self.query_tower, self.candidate_tower, self.ssm = query_tower, candidate_tower, ssm
        self.task = (tfrs.tasks.Retrieval(temperature=temperature, remove_accidental_hits=True) if ssm
                     else tfrs.tasks.Retrieval())

    def compute_loss(self, features, training=False):
        query = self.query_tower(features, training=training)
        candidate = self.candidate_tower(features["target"], training=training)
        if not self.ssm:
            return self.task(query, candidate, compute_metrics=False)
        query, candidate = tf.math.l2_normalize(query, -1), tf.math.l2_normalize(candidate, -1)
        return self.task(query, candidate, candidate_ids=features["target"], compute_metrics=False)


def towers(num_items, dim):
    items = IdTower(num_items, dim, name="candidate_tower")
    return HistoryPoolingTower(num_items, dim, item_embedding=items.embedding, name="query_tower"), items


def build(variant, num_items, counts, dim):
    keras.utils.set_random_seed(0)
    query, candidate = towers(num_items, dim)
    tfsoft_model = dict(num_items=num_items, item_counts=counts)
    if variant.startswith("tfrs_retrieval_ssm"):
        model = TfrsRetrieval(query, candidate, ssm=True, temperature=0.1)
    elif variant.startswith("tfrs_retrieval"):
        model = TfrsRetrieval(query, candidate)
    elif variant == "tfsoft_in_batch_dot":  # the same maths as TFRS: dot product, no masking
        model = TwoTowerModel(query, candidate, losses.InBatchSoftmax(temperature=1.0, remove_duplicates=False),
                              similarity="dot", **tfsoft_model)
    elif variant in ("tfsoft_ssm", "tfsoft_ssm_fused_adam"):  # the default: cosine, temperature, duplicate masking
        model = TwoTowerModel(query, candidate, losses.InBatchSoftmax(temperature=0.1), **tfsoft_model)
    elif variant == "tfsoft_ssm_sparse_gradients":  # Keras' sparse table gradients (tfsoft before tfsoft.gradients)
        model = TwoTowerModel(query, candidate, losses.InBatchSoftmax(temperature=0.1), dense_gradients="never",
                              **tfsoft_model)
    elif variant == "tfsoft_ssm_logq":
        model = TwoTowerModel(query, candidate, losses.InBatchSoftmax(temperature=0.1, log_q=True), **tfsoft_model)
    else:
        raise ValueError(variant)
    # keras.optimizers.Adam, as TFRS users write it, for every variant but the "_fused_adam" ones,
    # which get tfsoft train's `optimizer: adam` (tf_keras legacy Adam: fused ResourceApplyAdam on
    # dense gradients; TFRS's train_step hands it sparse slices, so TFRS gains nothing from it).
    fused = variant.endswith("_fused_adam")
    model.compile(optimizer=keras.optimizers.legacy.Adam(1e-3) if fused else keras.optimizers.Adam(1e-3))
    return model


VARIANTS = ["tfrs_retrieval", "tfsoft_in_batch_dot", "tfsoft_ssm", "tfrs_retrieval_ssm", "tfsoft_ssm_logq",
            "tfsoft_ssm_sparse_gradients", "tfsoft_ssm_fused_adam", "tfrs_retrieval_fused_adam"]


def time_variant(name: str, batch_size: int, dim: int, epochs: int) -> tuple[list[float], list[float], int]:
    """Epoch times of one variant in one ``fit``, after a warm-up epoch (tracing, allocation, cache)."""
    prepared = prepare(load_dataset("lastfm_small"), SplitSpec(window=20))
    examples = next_item_examples(prepared.split.train, prepared.split.train_user, 20)
    dataset = make_dataset(examples.as_features(), batch_size, seed=0, drop_remainder=True).cache()
    model = build(name, prepared.items.num_indices, prepared.item_counts, dim)
    timer = EpochTimer()
    model.fit(dataset, epochs=1 + epochs, verbose=0, callbacks=[timer])
    return timer.wall[1:], timer.cpu[1:], len(examples) // batch_size


def _ratio(numerator: str, denominator: str, rounds: list[dict]) -> dict:
    """Throughput ratio numerator/denominator: of the medians, and per round (paired processes)."""
    per_round = [r[denominator] / r[numerator] for r in rounds]
    return {"of_medians": statistics.median(r[denominator] for r in rounds) / statistics.median(r[numerator] for r in rounds),
            "median_of_rounds": statistics.median(per_round), "per_round": per_round}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=8, help="fresh processes per variant, interleaved")
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs per process (after one warm-up epoch)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="bench/results/throughput_lastfm.json")
    args = parser.parse_args()
    if args.variant:  # child process: time one variant, print JSON
        times, cpu, steps = time_variant(args.variant, args.batch_size, args.dim, args.epochs)
        print(json.dumps({"times": times, "cpu": cpu, "steps": steps}))
        return

    # Each variant runs in its own fresh process: in one process, the speed of a model depended
    # on the order the models were built in. Rounds are interleaved to share any drift in the
    # machine's load; a round's per-variant number is the median of its process's epochs.
    seconds = {name: [] for name in VARIANTS}
    cpu_seconds = {name: [] for name in VARIANTS}
    rounds, cpu_rounds = [], []
    steps = None
    for index in range(args.rounds):
        this_round, this_cpu = {}, {}
        for name in (VARIANTS if index % 2 == 0 else VARIANTS[::-1]):
            command = [sys.executable, __file__, "--variant", name, "--epochs", str(args.epochs),
                       "--batch-size", str(args.batch_size), "--dim", str(args.dim)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            child = json.loads(output.strip().splitlines()[-1])
            steps = child["steps"]
            seconds[name].extend(child["times"])
            cpu_seconds[name].extend(child["cpu"])
            this_round[name] = 1000 * statistics.median(child["times"]) / steps
            this_cpu[name] = 1000 * statistics.median(child["cpu"]) / steps
        rounds.append(this_round)
        cpu_rounds.append(this_cpu)
        print(f"round {index + 1}/{args.rounds}: " + ", ".join(f"{n} {v:.2f}" for n, v in this_round.items()) + " ms/step",
              flush=True)
    results = {}
    for name in VARIANTS:
        step_ms = statistics.median(r[name] for r in rounds)
        cpu_ms = statistics.median(r[name] for r in cpu_rounds)
        results[name] = {"step_ms": step_ms, "examples_per_second": 1000 * args.batch_size / step_ms,
                         "cpu_ms_per_step": cpu_ms, "step_ms_per_round": [r[name] for r in rounds],
                         "cpu_ms_per_step_per_round": [r[name] for r in cpu_rounds],
                         "epoch_seconds": seconds[name], "epoch_cpu_seconds": cpu_seconds[name]}
        print(f"{name:22s} {results[name]['examples_per_second']:10.0f} examples/s  "
              f"{step_ms:.2f} ms/step  {cpu_ms:.2f} CPU-ms/step")
    ratios = {
        "tfsoft_ssm_over_tfrs": _ratio("tfsoft_ssm", "tfrs_retrieval", rounds),
        "tfsoft_dot_over_tfrs": _ratio("tfsoft_in_batch_dot", "tfrs_retrieval", rounds),
        "tfsoft_ssm_over_tfrs_ssm": _ratio("tfsoft_ssm", "tfrs_retrieval_ssm", rounds),
        "tfsoft_ssm_fused_adam_over_tfrs_fused_adam": _ratio("tfsoft_ssm_fused_adam", "tfrs_retrieval_fused_adam", rounds),
        "tfsoft_ssm_fused_adam_over_tfrs": _ratio("tfsoft_ssm_fused_adam", "tfrs_retrieval", rounds),
        "dense_over_sparse_gradients": _ratio("tfsoft_ssm", "tfsoft_ssm_sparse_gradients", rounds),
    }
    logq = _ratio("tfsoft_ssm", "tfsoft_ssm_logq", rounds)  # step-time ratio logq/ssm
    overhead = {"of_medians": logq["of_medians"] - 1, "median_of_rounds": logq["median_of_rounds"] - 1,
                "per_round": [r - 1 for r in logq["per_round"]]}
    cpu_ratios = {key: _ratio(*pair, cpu_rounds)["median_of_rounds"] for key, pair in [
        ("tfsoft_ssm_over_tfrs", ("tfsoft_ssm", "tfrs_retrieval")),
        ("tfsoft_dot_over_tfrs", ("tfsoft_in_batch_dot", "tfrs_retrieval")),
        ("tfsoft_ssm_over_tfrs_ssm", ("tfsoft_ssm", "tfrs_retrieval_ssm"))]}
    cpu_overhead = _ratio("tfsoft_ssm", "tfsoft_ssm_logq", cpu_rounds)["median_of_rounds"] - 1
    for key, value in ratios.items():
        print(f"{key}: {value['of_medians']:.3f}x (median of per-round ratios {value['median_of_rounds']:.3f}x)")
    print(f"logQ overhead: {overhead['of_medians']:+.1%} (median of per-round {overhead['median_of_rounds']:+.1%})")
    write_result(args.out, {
        "benchmark": "training throughput, tfsoft in-batch loss vs tfrs.tasks.Retrieval, identical towers",
        "data": f"lastfm_small next-item examples ({steps * args.batch_size} per epoch, {steps} steps)",
        "batch_size": args.batch_size, "embedding_dim": args.dim, "rounds": args.rounds,
        "epochs_per_round": args.epochs, "machine": machine(),
        "settings": "same for every variant: Adam(1e-3) (keras.optimizers.Adam; tf_keras legacy Adam for *_fused_adam), no jit_compile, steps_per_execution=1, default TF "
                    "threading; one fresh process per variant and round, rounds interleaved (order reversed "
                    "every other round); epochs timed inside one fit, first (warm-up) epoch left out",
        "note": "2 vCPUs, possibly shared with other jobs: single numbers are noisy, compare medians and "
                "per-round (paired) ratios",
        "results": results,
        "throughput_ratios": ratios, "log_q_overhead": overhead,
        "cpu_time": {**cpu_ratios, "log_q_overhead": cpu_overhead},
        "targets": {"tfsoft_over_tfrs": ">= 1.0", "log_q_overhead": "<= 0.05"},
    })


if __name__ == "__main__":
    main()
