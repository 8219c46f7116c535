"""Training throughput: tfsoft's in-batch loss vs TensorFlow Recommenders' ``tasks.Retrieval``.

Identical towers (history mean-pooling query tower over the last 20 items, item-id candidate
tower, d = 64, tied embeddings), identical batches of lastfm_small next-item examples, same
optimizer, one process; the variants are timed in interleaved rounds and the median epoch
time is reported. Also measures the extra step time of the logQ correction.

    .venv/bin/python bench/bench_throughput.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import machine, write_result  # noqa: E402

import tensorflow_recommenders as tfrs  # noqa: E402

from tfsoft import losses  # noqa: E402
from tfsoft.backend import keras, tf  # noqa: E402
from tfsoft.data import SplitSpec, load_dataset, make_dataset, next_item_examples, prepare  # noqa: E402
from tfsoft.model import TwoTowerModel  # noqa: E402
from tfsoft.towers import HistoryPoolingTower, IdTower  # noqa: E402


class TfrsRetrieval(tfrs.Model):
    """The same towers trained by TFRS's retrieval task (in-batch softmax, dot product)."""

    def __init__(self, query_tower, candidate_tower):
        super().__init__()
        self.query_tower, self.candidate_tower = query_tower, candidate_tower
        self.task = tfrs.tasks.Retrieval()

    def compute_loss(self, features, training=False):
        query = self.query_tower(features, training=training)
        candidate = self.candidate_tower(features["target"], training=training)
        return self.task(query, candidate, compute_metrics=False)


def towers(num_items, dim):
    items = IdTower(num_items, dim, name="candidate_tower")
    return HistoryPoolingTower(num_items, dim, item_embedding=items.embedding, name="query_tower"), items


def build(variant, num_items, counts, dim):
    keras.utils.set_random_seed(0)
    query, candidate = towers(num_items, dim)
    if variant == "tfrs_retrieval":
        model = TfrsRetrieval(query, candidate)
    elif variant == "tfsoft_in_batch_dot":  # the same maths as TFRS: dot product, no masking
        model = TwoTowerModel(query, candidate, losses.InBatchSoftmax(temperature=1.0, remove_duplicates=False),
                              num_items=num_items, item_counts=counts, similarity="dot")
    elif variant == "tfsoft_ssm":  # the default: cosine, temperature, duplicate masking
        model = TwoTowerModel(query, candidate, losses.InBatchSoftmax(temperature=0.1),
                              num_items=num_items, item_counts=counts)
    elif variant == "tfsoft_ssm_logq":
        model = TwoTowerModel(query, candidate, losses.InBatchSoftmax(temperature=0.1, log_q=True),
                              num_items=num_items, item_counts=counts)
    else:
        raise ValueError(variant)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


VARIANTS = ["tfrs_retrieval", "tfsoft_in_batch_dot", "tfsoft_ssm", "tfsoft_ssm_logq"]


def time_variant(name: str, batch_size: int, dim: int, epochs: int) -> list[float]:
    """Epoch times of one variant, after a warm-up epoch (tracing, allocation)."""
    prepared = prepare(load_dataset("lastfm_small"), SplitSpec(window=20))
    examples = next_item_examples(prepared.split.train, prepared.split.train_user, 20)
    dataset = make_dataset(examples.as_features(), batch_size, seed=0, drop_remainder=True).cache()
    model = build(name, prepared.items.num_indices, prepared.item_counts, dim)
    model.fit(dataset, epochs=1, verbose=0)
    times, cpu = [], []
    for _ in range(epochs):
        started, started_cpu = time.perf_counter(), time.process_time()
        model.fit(dataset, epochs=1, verbose=0)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return times, cpu, len(examples) // batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per variant, interleaved")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per process")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="bench/results/throughput_lastfm.json")
    args = parser.parse_args()
    if args.variant:  # child process: time one variant, print JSON
        times, cpu, steps = time_variant(args.variant, args.batch_size, args.dim, args.epochs)
        print(json.dumps({"times": times, "cpu": cpu, "steps": steps}))
        return

    # Each variant runs in its own fresh process (in one process the models built later
    # were measurably slower, whatever the order), rounds interleaved to share any drift.
    seconds = {name: [] for name in VARIANTS}
    cpu_seconds = {name: [] for name in VARIANTS}
    steps = None
    for _ in range(args.rounds):
        for name in VARIANTS:
            command = [sys.executable, __file__, "--variant", name, "--epochs", str(args.epochs),
                       "--batch-size", str(args.batch_size), "--dim", str(args.dim)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            child = json.loads(output.strip().splitlines()[-1])
            seconds[name].extend(child["times"])
            cpu_seconds[name].extend(child["cpu"])
            steps = child["steps"]
    results = {}
    for name in VARIANTS:
        median = statistics.median(seconds[name])
        cpu_median = statistics.median(cpu_seconds[name])
        results[name] = {"epoch_seconds": seconds[name], "median_epoch_seconds": median,
                         "examples_per_second": steps * args.batch_size / median,
                         "step_ms": 1000 * median / steps,
                         "epoch_cpu_seconds": cpu_seconds[name], "cpu_ms_per_step": 1000 * cpu_median / steps}
        print(f"{name:22s} {results[name]['examples_per_second']:10.0f} examples/s  "
              f"{results[name]['step_ms']:.2f} ms/step  {results[name]['cpu_ms_per_step']:.2f} CPU-ms/step")
    ratio = results["tfsoft_ssm"]["examples_per_second"] / results["tfrs_retrieval"]["examples_per_second"]
    same_maths = results["tfsoft_in_batch_dot"]["examples_per_second"] / results["tfrs_retrieval"]["examples_per_second"]
    overhead = results["tfsoft_ssm_logq"]["step_ms"] / results["tfsoft_ssm"]["step_ms"] - 1
    cpu_ratio = results["tfrs_retrieval"]["cpu_ms_per_step"] / results["tfsoft_ssm"]["cpu_ms_per_step"]
    cpu_overhead = results["tfsoft_ssm_logq"]["cpu_ms_per_step"] / results["tfsoft_ssm"]["cpu_ms_per_step"] - 1
    print(f"tfsoft SSM / TFRS throughput: {ratio:.2f}x (same maths: {same_maths:.2f}x); logQ overhead {overhead:+.1%}")
    print(f"by CPU time per step (robust to other load): tfsoft SSM / TFRS {cpu_ratio:.2f}x; logQ overhead {cpu_overhead:+.1%}")
    write_result(args.out, {
        "benchmark": "training throughput, tfsoft in-batch loss vs tfrs.tasks.Retrieval, identical towers",
        "data": f"lastfm_small next-item examples ({steps * args.batch_size} per epoch)",
        "batch_size": args.batch_size, "embedding_dim": args.dim, "rounds": args.rounds,
        "epochs_per_round": args.epochs, "machine": machine(), "results": results,
        "tfsoft_ssm_over_tfrs": ratio, "tfsoft_same_maths_over_tfrs": same_maths, "log_q_overhead": overhead,
        "cpu_time": {"tfsoft_ssm_over_tfrs": cpu_ratio, "log_q_overhead": cpu_overhead},
        "targets": {"tfsoft_over_tfrs": ">= 1.0", "log_q_overhead": "<= 0.05"},
    })


if __name__ == "__main__":
    main()
