"""Optimizer step time against catalog size, and LazyAdam's quality on real data.

**Speed** (``--part speed``): the tfsoft default model (history mean-pooling query tower over
20 items, tied item-id candidate tower, d = 64, in-batch SSM, batch 256) on synthetic
catalogs of V items whose ids follow a Zipf-like popularity (p ∝ 1/(rank + 10)), one fresh
process per (V, optimizer), ms per step after a warm-up epoch. Optimizers:

* ``keras_adam_sparse``: ``keras.optimizers.Adam`` on Keras' sparse slices (what TFRS does);
* ``adam``: ``tfsoft train``'s default (fused legacy Adam on dense table gradients);
* ``lazy_adam``: :class:`tfsoft.optimizers.LazyAdam` (only the batch's rows move);
* ``adagrad``: ``keras.optimizers.Adagrad`` (sparse by nature), for reference.

**Quality** (``--part quality``): ``configs/lastfm_in_batch.yaml`` trained with ``adam`` and
with ``lazy_adam`` for the given seeds; test Recall@10/NDCG@10 of the best epoch.

    .venv/bin/python bench/bench_optimizers.py --part speed --catalogs 3646 100000 1000000
    .venv/bin/python bench/bench_optimizers.py --part quality --seeds 0 1 2
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

from common import EpochTimer, machine, mean_std, write_result  # noqa: E402

import numpy as np  # noqa: E402

from tfsoft import losses  # noqa: E402
from tfsoft.backend import keras, tf  # noqa: E402
from tfsoft.model import TwoTowerModel  # noqa: E402
from tfsoft.optimizers import LazyAdam  # noqa: E402
from tfsoft.towers import HistoryPoolingTower, IdTower  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OPTIMIZERS = {
    "keras_adam_sparse": (lambda: keras.optimizers.Adam(1e-3), "never"),
    "adam": (lambda: keras.optimizers.legacy.Adam(1e-3), "auto"),
    "lazy_adam": (lambda: LazyAdam(1e-3), "auto"),
    "adagrad": (lambda: keras.optimizers.Adagrad(0.1), "auto"),
}


def time_steps(num_items: int, optimizer: str, steps: int, batch_size: int = 256, dim: int = 64) -> float:
    """Median ms/step over 3 timed epochs of ``steps`` steps, after a warm-up epoch."""
    rng = np.random.default_rng(0)
    popularity = 1.0 / (np.arange(1, num_items) + 10.0)
    draws = rng.choice(np.arange(1, num_items), size=(steps * batch_size, 21), p=popularity / popularity.sum())
    dataset = tf.data.Dataset.from_tensor_slices({"history": draws[:, :20], "target": draws[:, 20]})
    dataset = dataset.batch(batch_size, drop_remainder=True).cache()
    keras.utils.set_random_seed(0)
    items = IdTower(num_items, dim)
    make, policy = OPTIMIZERS[optimizer]
    model = TwoTowerModel(HistoryPoolingTower(num_items, dim, item_embedding=items.embedding), items,
                          losses.InBatchSoftmax(temperature=0.1), num_items=num_items, dense_gradients=policy)
    model.compile(optimizer=make())
    timer = EpochTimer()
    model.fit(dataset, epochs=4, verbose=0, callbacks=[timer])
    return 1000 * statistics.median(timer.wall[1:]) / steps


def speed(catalogs: list[int]) -> dict:
    results = {}
    for num_items in catalogs:
        steps = 40 if num_items < 200_000 else 8  # Adam on a 1M table takes ~1 s a step
        for name in OPTIMIZERS:
            command = [sys.executable, __file__, "--child", str(num_items), name, str(steps)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            ms = json.loads(output.strip().splitlines()[-1])["ms"]
            results.setdefault(str(num_items), {})[name] = ms
            print(f"V={num_items:>9,d}  {name:18s} {ms:9.2f} ms/step", flush=True)
    return results


def quality(seeds: list[int], epochs: int | None) -> dict:
    from tfsoft.config import load_config
    from tfsoft.training import train
    from tfsoft.validation import evaluate_splits

    results = {}
    for name in ("adam", "lazy_adam"):
        recall, ndcg, best = [], [], []
        for seed in seeds:
            overrides = [f"train.optimizer={name}", f"train.seed={seed}"] + ([f"train.epochs={epochs}"] if epochs else [])
            config = load_config(ROOT / "configs" / "lastfm_in_batch.yaml", overrides)
            result = train(config)
            test = evaluate_splits(result.model, config, result.prepared, ["test"])["test"]
            recall.append(test["recall@10"])
            ndcg.append(test["ndcg@10"])
            best.append(result.best_epoch)
            print(f"{name:10s} seed {seed}: test recall@10 {recall[-1]:.4f} ndcg@10 {ndcg[-1]:.4f} "
                  f"(best epoch {best[-1]})", flush=True)
        results[name] = {"recall@10": mean_std(recall), "ndcg@10": mean_std(ndcg), "best_epoch": best}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["speed", "quality"], default="speed")
    parser.add_argument("--catalogs", type=int, nargs="+", default=[3646, 100_000, 1_000_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="quality: override train.epochs")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        num_items, name, steps = args.child
        print(json.dumps({"ms": time_steps(int(num_items), name, int(steps))}))
        return
    out = ROOT / "bench" / "results" / f"optimizers_{args.part}.json"
    if args.part == "speed":
        payload = {"benchmark": "ms per training step against catalog size, by optimizer",
                   "setup": "history mean-pooling (20 items) + tied item-id tower, d=64, in-batch SSM, batch 256; "
                            "synthetic Zipf-like item ids; fresh process per cell; median of 3 epochs after warm-up",
                   "results_ms_per_step": speed(args.catalogs)}
    else:
        payload = {"benchmark": "LazyAdam vs Adam on lastfm_small (configs/lastfm_in_batch.yaml), test split",
                   "seeds": args.seeds, "results": quality(args.seeds, args.epochs)}
    write_result(str(out), {**payload, "machine": machine()})


if __name__ == "__main__":
    main()
