"""What a soft-target term costs per training step (issue 13, overhead benchmark).

Part ``lastfm``: on ``lastfm_small`` with the recipes of ``configs/towers/`` (SASRec and GRU4Rec,
per-position training), for the two base losses of ``bench/bench_soft_targets.py`` (full
softmax; in-batch SSM with 1,024 mixed negatives and logQ), the median step time of

* ``base``, ``label_smoothing`` (α 0.1), ``popularity`` (α 0.5, T 3) and ``teacher`` (SKD from a
  base run of the same tower, α 0.5, T 3): Keras' own compiled ``train_function`` (what ``fit``
  runs: ``train_step`` in a ``tf.function``) on the same fixed batches, after warm-up steps;
* ``teacher_forward``: the teacher's own forward pass alone in a ``tf.function``: its query
  encoding of the batch and its scores of the student's candidates (the whole catalog for full
  softmax; the batch's positives plus 1,024 uniform ids for in-batch), i.e. what
  :class:`tfsoft.teachers.TeacherTarget` adds before the softmax of its target.

The variants of a group are timed in interleaved repeats (order rotated each repeat), so each
repeat gives paired ratios; the JSON holds every repeat's per-step time, the medians, the
overheads (of the medians, and the median of the paired ratios) and the targets as booleans:

* ``label_smoothing`` / ``popularity``: step time ≤ 1.10 × base;
* ``teacher``: (strict) teacher step − base step ≤ 1.10 × teacher forward, i.e. the teacher
  costs at most its forward pass + 10 %; (as the brief phrases it) teacher step ≤
  1.10 × (base step + teacher forward).

Part ``synthetic``: the scaling argument measured. A synthetic 1M-item catalog (Zipf counts,
user-id query tower, item-id candidate tower, d 64, batch 256, LazyAdam, the library's
:class:`tfsoft.model.TwoTowerModel`), popularity soft targets (α 0.5, T 3) over the whole catalog
(``full_softmax``) vs over the in-batch candidates (``in_batch`` + 1,024 mixed negatives + logQ),
each with its base. Every variant runs in a fresh process: step times and its peak resident
memory (``VmHWM`` of ``/proc/self/status``; ``tracemalloc`` does not see TensorFlow's
allocator), also relative to the resident memory just before the first step, and the device's
peak (``tf.config.experimental.get_memory_info``) when there is an accelerator.

The teacher is ``runs/bench_soft_targets/lastfm_small/<tower>/base/seed0`` when that run exists,
else a 1-epoch run trained (in a subprocess) into ``--runs``.

    mkdir -p /work/locks; flock /work/locks/timing.lock .venv/bin/python bench/bench_soft_target_overhead.py
    .venv/bin/python bench/bench_soft_target_overhead.py --quick --out /tmp/overhead.json   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import machine, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOWERS = {"sasrec": "configs/towers/sasrec_ssm.yaml", "gru": "configs/towers/gru4rec_ssm.yaml"}
MIXED_NEGATIVES = 1024
LOSSES = {
    "full_softmax": ["loss=full_softmax", "loss.temperature=0.1"],
    "in_batch": ["loss=in_batch", "loss.temperature=0.1", f"loss.mixed_negatives={MIXED_NEGATIVES}",
                 "loss.log_q_correction=true"],
}
SOURCES = {
    "base": [],
    "label_smoothing": ["soft_target=label_smoothing", "soft_target.alpha=0.1"],
    "popularity": ["soft_target=popularity", "soft_target.alpha=0.5", "soft_target.temperature=3"],
    "teacher": ["soft_target=teacher", "soft_target.teacher_runs=[{teacher}]", "soft_target.alpha=0.5",
                "soft_target.temperature=3"],
}
#: --quick: smaller towers (and so faster tracing) for the student and its teacher alike
QUICK_OVERRIDES = {"sasrec": ["model.query_tower.num_blocks=1"], "gru": ["model.query_tower.num_layers=1"]}
OVERHEAD_TARGET = 0.10
SYNTHETIC_VARIANTS = ("full_softmax_base", "full_softmax_popularity", "in_batch_base", "in_batch_popularity")


# ----------------------------------------------------------------------------- helpers
def proc_status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (VmHWM, VmRSS), None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_kib() -> int | None:
    """The process's peak resident memory: VmHWM, or the current VmRSS if larger (the kernel
    updates the high-water mark lazily)."""
    values = [v for v in (proc_status_kib("VmHWM"), proc_status_kib("VmRSS")) if v is not None]
    return max(values) if values else None


def device_peak_bytes() -> dict | None:
    """Peak memory of the first accelerator (``get_memory_info``), None on CPU only."""
    from tfsoft.backend import tf

    devices = tf.config.list_logical_devices("GPU")
    if not devices:
        return None
    try:
        info = tf.config.experimental.get_memory_info(devices[0].name)
    except (ValueError, RuntimeError):
        return None
    return {"device": devices[0].name, "peak_bytes": int(info["peak"]), "current_bytes": int(info["current"])}


def timed_steps(call, steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds per call over ``steps`` calls; the last output is read back so that
    nothing is left running when the clock stops."""
    started, cpu = time.perf_counter(), time.process_time()
    output = None
    for _ in range(steps):
        output = call()
    _sync(output)
    return (time.perf_counter() - started) / steps, (time.process_time() - cpu) / steps


def _sync(output) -> None:
    from tfsoft.backend import tf

    for value in tf.nest.flatten(output):
        if isinstance(value, tf.Tensor) and value.shape.num_elements() != 0:
            value[(0,) * value.shape.rank].numpy()  # one element: waits for the op, copies nothing big


def interleaved(calls: dict, warmup: int, repeats: int, steps: int) -> dict:
    """Time every call ``repeats`` times (``steps`` calls each) after ``warmup`` calls,
    rotating the order each repeat; name -> {wall_ms, cpu_ms: per-repeat per-step times}."""
    names = list(calls)
    times = {name: {"wall_ms": [], "cpu_ms": []} for name in names}
    for name in names:
        started = time.perf_counter()
        for _ in range(warmup):
            _sync(calls[name]())
        times[name]["warmup_seconds"] = time.perf_counter() - started
    for index in range(repeats):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            wall, cpu = timed_steps(calls[name], steps)
            times[name]["wall_ms"].append(1000 * wall)
            times[name]["cpu_ms"].append(1000 * cpu)
    for entry in times.values():
        entry["median_ms"] = statistics.median(entry["wall_ms"])
        entry["min_ms"] = min(entry["wall_ms"])
        entry["median_cpu_ms"] = statistics.median(entry["cpu_ms"])
    return times


def overhead(times: dict, name: str, reference: str = "base") -> dict:
    """Step-time overhead of ``name`` over ``reference``: of the medians, and the median of the
    per-repeat (paired) ratios."""
    paired = [a / b - 1 for a, b in zip(times[name]["wall_ms"], times[reference]["wall_ms"])]
    return {"of_medians": times[name]["median_ms"] / times[reference]["median_ms"] - 1,
            "median_of_paired": statistics.median(paired), "per_repeat": paired,
            "of_minimums": times[name]["min_ms"] / times[reference]["min_ms"] - 1,
            "cpu_of_medians": times[name]["median_cpu_ms"] / times[reference]["median_cpu_ms"] - 1}


# ------------------------------------------------------------------------------ lastfm
def find_or_train_teacher(tower: str, runs: Path, epochs: int, steps: int | None, batch_size: int | None,
                          in_process: bool = False, extra: tuple = ()) -> dict:
    """A base (full softmax) run of ``tower`` to distil from: the soft-target benchmark's, if
    there, else a short run trained in a subprocess (``tfsoft train`` turns on deterministic ops
    process-wide, which would slow every later step of this process)."""
    existing = ROOT / "runs" / "bench_soft_targets" / "lastfm_small" / tower / "base" / "seed0"
    if steps is None and (existing / "metrics.json").is_file():
        return {"run": str(existing), "trained_here": False}
    target = runs / f"teacher_{tower}"
    if (target / "metrics.json").is_file():
        return {"run": str(target), "trained_here": False}
    overrides = [*LOSSES["full_softmax"], *extra, f"train.epochs={epochs}", "train.seed=0"]
    if steps:
        overrides.append(f"train.steps_per_epoch={steps}")
    if batch_size:
        overrides.append(f"train.batch_size={batch_size}")
    started = time.perf_counter()
    if in_process:  # smoke runs: no second TensorFlow start-up (deterministic ops do not matter there)
        from tfsoft.config import load_config
        from tfsoft.train_run import train_run

        with open(os.devnull, "w") as quiet:
            train_run(load_config(ROOT / TOWERS[tower], overrides), target, overwrite=True, stream=quiet)
    else:
        command = [sys.executable, "-c", "import sys; from tfsoft.cli import main; sys.exit(main(sys.argv[1:]))",
                   "train", "--config", str(ROOT / TOWERS[tower]), "--run-dir", str(target), "--overwrite"]
        for override in overrides:
            command += ["--set", override]
        subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    return {"run": str(target), "trained_here": True, "train_command_seconds": time.perf_counter() - started,
            "overrides": overrides}


def teacher_forward(teacher, batches: list, loss: str, num_items: int, seed: int = 0):
    """A callable running the teacher's forward pass on the next batch: query encoding + scores
    of the candidates the student's ``loss`` uses (what TeacherTarget computes before its softmax)."""
    import numpy as np

    from tfsoft.backend import tf
    from tfsoft.losses.logits import prepare_embeddings

    rng = np.random.default_rng(seed)
    inputs = []
    for features in batches:
        if loss == "full_softmax":
            ids = tf.range(num_items)
        else:  # the batch's positives (every non-padding position) ∪ the mixed negatives
            target = tf.reshape(tf.cast(features["target"], tf.int64), [-1])
            positives = tf.boolean_mask(target, tf.not_equal(target, 0))
            ids = tf.concat([positives, tf.constant(rng.integers(1, num_items, MIXED_NEGATIVES), tf.int64)], 0)
        inputs.append((features, ids))
    # one trace for every batch: the in-batch candidate count varies with the batch's positions
    signature = ({key: tf.TensorSpec(value.shape, value.dtype) for key, value in batches[0].items()},
                 tf.TensorSpec([None], inputs[0][1].dtype))

    @tf.function(input_signature=signature)
    def forward(features, candidate_ids):
        query = teacher.encode(features, training=False).query
        candidates = prepare_embeddings(teacher.candidate_tower(candidate_ids, training=False), teacher.similarity)
        return tf.matmul(query, candidates, transpose_b=True)

    state = {"i": 0}

    def call():
        features, ids = inputs[state["i"] % len(inputs)]
        state["i"] += 1
        return forward(features, ids)

    return call


def lastfm_group(tower: str, loss: str, teacher_run: str, prepared, args) -> dict:
    """Step times of base / label_smoothing / popularity / teacher and the teacher's forward pass."""
    from tfsoft.backend import keras, tf
    from tfsoft.config import load_config
    from tfsoft.data import make_dataset
    from tfsoft.training import build_model, make_optimizer, training_examples

    calls, overrides_used, model_teacher, build_seconds = {}, {}, None, {}
    batches = None
    for source, soft in SOURCES.items():
        overrides = [*LOSSES[loss], *(s.format(teacher=teacher_run) for s in soft), *_extra(tower, args),
                     "train.seed=0"]
        if args.batch_size:
            overrides.append(f"train.batch_size={args.batch_size}")
        config = load_config(ROOT / TOWERS[tower], overrides)
        overrides_used[source] = overrides
        if batches is None:
            dataset = make_dataset(training_examples(config, prepared), config.train.batch_size, seed=0,
                                   drop_remainder=True, prefetch=False)
            batches = list(dataset.take(args.batches))
            batch_size = config.train.batch_size
        keras.utils.set_random_seed(0)
        built = time.perf_counter()
        model = build_model(config, prepared)
        model.compile(optimizer=make_optimizer(config))
        train_function = model.make_train_function()
        iterator = iter(tf.data.Dataset.from_tensor_slices(_stack(batches)).batch(batch_size).repeat())
        calls[source] = (lambda f, it: (lambda: f(it)))(train_function, iterator)
        build_seconds[source] = time.perf_counter() - built
        if source == "teacher":
            model_teacher = model.retrieval_loss.source.teachers[0]
    calls["teacher_forward"] = teacher_forward(model_teacher, batches, loss, prepared.items.num_indices)
    times = interleaved(calls, args.warmup, args.repeats, args.steps)
    for name, seconds in build_seconds.items():
        times[name]["build_seconds"] = seconds
    base, teacher, forward = (times[n]["median_ms"] for n in ("base", "teacher", "teacher_forward"))
    overheads = {name: overhead(times, name) for name in ("label_smoothing", "popularity", "teacher")}
    checks = {
        f"{name}_overhead_le_10pct": overheads[name]["of_medians"] <= OVERHEAD_TARGET
        for name in ("label_smoothing", "popularity")
    }
    checks.update({
        f"{name}_overhead_le_10pct_paired": overheads[name]["median_of_paired"] <= OVERHEAD_TARGET
        for name in ("label_smoothing", "popularity")
    })
    teacher_checks = {
        "teacher_overhead_ms": teacher - base,
        "teacher_forward_ms": forward,
        "teacher_overhead_over_forward": (teacher - base) / forward,
        # strict: the teacher adds at most its own forward pass + 10 % of it
        "teacher_le_base_plus_forward_plus_10pct_of_forward": teacher <= base + (1 + OVERHEAD_TARGET) * forward,
        # the brief's phrasing: teacher step <= (base step + teacher forward) + 10 %
        "teacher_le_110pct_of_base_plus_forward": teacher <= (1 + OVERHEAD_TARGET) * (base + forward),
    }
    return {"batch_size": batch_size, "overrides": overrides_used, "times": times, "overhead": overheads,
            "targets_met": {**checks, **{k: v for k, v in teacher_checks.items() if isinstance(v, bool)}},
            "teacher": {k: v for k, v in teacher_checks.items() if not isinstance(v, bool)}}


def _load() -> float | None:
    """The 1-minute load average: how busy the machine was (this process counts for ~1-2)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _extra(tower: str, args) -> list[str]:
    return QUICK_OVERRIDES[tower] if args.quick else []


def _stack(batches: list) -> dict:
    """The fixed batches as one dict of [K·B, ...] arrays (re-batched in order: the same batches)."""
    import numpy as np

    return {key: np.concatenate([b[key].numpy() for b in batches]) for key in batches[0]}


def run_lastfm(args) -> dict:
    from tfsoft.config import load_config
    from tfsoft.training import prepare_data

    prepared = prepare_data(load_config(ROOT / TOWERS[args.towers[0]]).data)
    results, teachers = {}, {}
    for tower in args.towers:
        teachers[tower] = find_or_train_teacher(tower, Path(args.runs), 1, args.teacher_steps, args.batch_size,
                                                in_process=args.quick, extra=_extra(tower, args))
        for loss in args.losses:
            started, load = time.perf_counter(), _load()
            group = lastfm_group(tower, loss, teachers[tower]["run"], prepared, args)
            group["seconds"] = time.perf_counter() - started
            group["load_average_1min"] = {"before": load, "after": _load()}
            results.setdefault(tower, {})[loss] = group
            t = group["times"]
            print(f"{tower:6s} {loss:12s} " + "  ".join(f"{n} {t[n]['median_ms']:.1f}" for n in t) + " ms/step; "
                  + "  ".join(f"{n} {o['of_medians']:+.1%}" for n, o in group["overhead"].items()), flush=True)
    return {"data": "lastfm_small (CSRec protocol, per-position examples, max_history 20)",
            "teachers": teachers, "num_items": prepared.items.num_indices, "results": results}


# --------------------------------------------------------------------------- synthetic
def synthetic_child(args) -> dict:
    """One synthetic variant in this (fresh) process: step times and peak memory."""
    import numpy as np

    from tfsoft import losses
    from tfsoft.backend import keras, tf
    from tfsoft.losses.soft_target_objective import SoftTargetLoss
    from tfsoft.model import TwoTowerModel
    from tfsoft.optimizers import LazyAdam
    from tfsoft.teachers.sources import PopularityTarget
    from tfsoft.towers import IdTower

    variant = args.synthetic_child
    num_indices = args.synthetic_items + 1  # index 0: OOV
    rng = np.random.default_rng(0)
    counts = np.zeros(num_indices)
    counts[1:] = np.floor(1e7 / np.arange(1, num_indices) ** 1.05) + 1  # Zipf-like training counts
    probability = counts / counts.sum()
    batch = args.synthetic_batch
    batches = [{"user": rng.integers(1, args.synthetic_users, batch),
                "target": rng.choice(num_indices, size=batch, p=probability)} for _ in range(4)]
    base = (losses.FullSoftmax(temperature=0.1) if variant.startswith("full_softmax")
            else losses.InBatchSoftmax(temperature=0.1, log_q=True, num_uniform_negatives=MIXED_NEGATIVES))
    loss = base
    if variant.endswith("popularity"):
        loss = SoftTargetLoss(base, PopularityTarget(temperature=3.0), alpha=0.5)
    keras.utils.set_random_seed(0)
    query = IdTower(args.synthetic_users, args.synthetic_dim, feature="user", name="query_tower")
    items = IdTower(num_indices, args.synthetic_dim, name="candidate_tower")
    model = TwoTowerModel(query, items, loss, num_items=num_indices, item_counts=counts, seed=0)
    model.compile(optimizer=LazyAdam(1e-3))
    dataset = tf.data.Dataset.from_tensor_slices(
        {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}).batch(batch).repeat()
    iterator = iter(dataset)
    train_function = model.make_train_function()
    rss_before = proc_status_kib("VmRSS")
    times = interleaved({variant: lambda: train_function(iterator)}, args.synthetic_warmup,
                        args.synthetic_repeats, _synthetic_steps(variant, args))[variant]
    hwm = peak_rss_kib()
    if hwm is not None and rss_before is not None:
        hwm = max(hwm, rss_before)  # the kernel's counters are approximate to ~100 KiB
    return {**times, "rss_before_first_step_mib": None if rss_before is None else rss_before / 1024,
            "peak_rss_mib": None if hwm is None else hwm / 1024,
            "peak_rss_increase_mib": None if hwm is None or rss_before is None else (hwm - rss_before) / 1024,
            "device_memory": device_peak_bytes()}


def run_synthetic(args) -> dict:
    """Each synthetic variant in its own fresh process (its own peak-memory high-water mark)."""
    results = {}
    for variant in SYNTHETIC_VARIANTS:
        if args.quick:  # smoke runs: in this process (peak memory is then cumulative)
            started = time.perf_counter()
            results[variant] = synthetic_child(argparse.Namespace(**{**vars(args), "synthetic_child": variant}))
            results[variant]["process_seconds"] = time.perf_counter() - started
            continue
        command = [sys.executable, __file__, "--synthetic-child", variant, *_synthetic_flags(args)]
        started, load = time.perf_counter(), _load()
        completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if completed.returncode != 0:
            results[variant] = {"error": f"exit {completed.returncode}", "stderr_tail": completed.stderr[-2000:]}
            print(f"synthetic {variant}: FAILED (exit {completed.returncode})", flush=True)
            continue
        results[variant] = json.loads(completed.stdout.strip().splitlines()[-1])
        results[variant]["process_seconds"] = time.perf_counter() - started
        results[variant]["load_average_1min"] = {"before": load, "after": _load()}
        r = results[variant]
        print(f"synthetic {variant:24s} {r['median_ms']:9.1f} ms/step  peak RSS {r['peak_rss_mib']:.0f} MiB "
              f"(+{r['peak_rss_increase_mib']:.0f} MiB in steps)", flush=True)
    ok = all("error" not in r for r in results.values())
    comparison = {}
    if ok:
        med = {k: v["median_ms"] for k, v in results.items()}
        mem = {k: v["peak_rss_increase_mib"] for k, v in results.items()}
        comparison = {
            "full_over_in_batch_step_time_with_soft_targets":
                med["full_softmax_popularity"] / med["in_batch_popularity"],
            "full_over_in_batch_step_time_base": med["full_softmax_base"] / med["in_batch_base"],
            "full_over_in_batch_peak_rss_increase_with_soft_targets":
                mem["full_softmax_popularity"] / max(mem["in_batch_popularity"], 1e-9),
            "popularity_overhead_full_softmax": med["full_softmax_popularity"] / med["full_softmax_base"] - 1,
            "popularity_overhead_in_batch": med["in_batch_popularity"] / med["in_batch_base"] - 1,
            "soft_target_extra_peak_rss_mib_full_softmax":
                results["full_softmax_popularity"]["peak_rss_mib"] - results["full_softmax_base"]["peak_rss_mib"],
            "soft_target_extra_peak_rss_mib_in_batch":
                results["in_batch_popularity"]["peak_rss_mib"] - results["in_batch_base"]["peak_rss_mib"],
        }
    return {"catalog_items": args.synthetic_items, "users": args.synthetic_users, "batch_size": args.synthetic_batch,
            "embedding_dim": args.synthetic_dim, "mixed_negatives": MIXED_NEGATIVES,
            "setup": "TwoTowerModel: user-id query tower, item-id candidate tower, cosine, τ 0.1, LazyAdam(1e-3); "
                     "Zipf(1.05) training counts; popularity soft target α 0.5, T 3 (log counts); "
                     "full_softmax: student and target over all items; in_batch: the batch's positives "
                     f"+ {MIXED_NEGATIVES} uniform mixed negatives, logQ-corrected, target restricted likewise",
            "memory_note": "peak_rss_mib = VmHWM of the variant's own process; peak_rss_increase_mib = VmHWM − "
                           "VmRSS just before the first step (tracing, optimizer slots and the steps' tensors)",
            "fresh_process_per_variant": not args.quick,
            "warmup_steps": args.synthetic_warmup, "repeats": args.synthetic_repeats,
            "steps_per_repeat": {v: _synthetic_steps(v, args) for v in SYNTHETIC_VARIANTS},
            "results": results, "comparison": comparison}


def _synthetic_steps(variant: str, args) -> int:
    """Steps per timed repeat: in-batch steps take milliseconds, full-catalog ones seconds."""
    return args.synthetic_in_batch_steps if variant.startswith("in_batch") else args.synthetic_steps


def _synthetic_flags(args) -> list[str]:
    return ["--synthetic-items", str(args.synthetic_items), "--synthetic-users", str(args.synthetic_users),
            "--synthetic-batch", str(args.synthetic_batch), "--synthetic-dim", str(args.synthetic_dim),
            "--synthetic-warmup", str(args.synthetic_warmup), "--synthetic-repeats", str(args.synthetic_repeats),
            "--synthetic-steps", str(args.synthetic_steps),
            "--synthetic-in-batch-steps", str(args.synthetic_in_batch_steps)]


# -------------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny sizes, few steps, sasrec/in_batch only unless --towers/--losses say")
    parser.add_argument("--out", default="bench/results/soft_target_overhead.json")
    parser.add_argument("--parts", nargs="+", default=["lastfm", "synthetic"], choices=["lastfm", "synthetic"])
    parser.add_argument("--towers", nargs="+", default=list(TOWERS), choices=list(TOWERS))
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    parser.add_argument("--batch-size", type=int, default=None, help="lastfm batch size (default: the recipe's)")
    parser.add_argument("--batches", type=int, default=8, help="fixed lastfm batches, cycled")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant (tracing, allocation)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed repeat")
    parser.add_argument("--runs", default="runs/bench_soft_target_overhead", help="where missing teachers are trained")
    parser.add_argument("--teacher-steps", type=int, default=None,
                        help="steps of a teacher trained here (default: 1 full epoch)")
    parser.add_argument("--synthetic-items", type=int, default=1_000_000)
    parser.add_argument("--synthetic-users", type=int, default=10_000)
    parser.add_argument("--synthetic-batch", type=int, default=256)
    parser.add_argument("--synthetic-dim", type=int, default=64)
    parser.add_argument("--synthetic-warmup", type=int, default=2)
    parser.add_argument("--synthetic-repeats", type=int, default=5)
    parser.add_argument("--synthetic-steps", type=int, default=2, help="steps per repeat, full-catalog variants")
    parser.add_argument("--synthetic-in-batch-steps", type=int, default=30, help="steps per repeat, in-batch variants")
    parser.add_argument("--synthetic-child", choices=SYNTHETIC_VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        if args.towers == list(TOWERS):
            args.towers = ["sasrec"]  # the faster of the two to trace
        if args.losses == list(LOSSES):
            args.losses = ["in_batch"]  # tracing dominates a smoke run: one group of five functions
        args.batch_size, args.batches, args.warmup, args.repeats, args.steps = 16, 2, 1, 2, 2
        args.teacher_steps = 1
        args.synthetic_items, args.synthetic_users, args.synthetic_batch = 5_000, 100, 32
        args.synthetic_warmup, args.synthetic_repeats, args.synthetic_steps = 1, 2, 1
        args.synthetic_in_batch_steps = 1
        if args.runs == parser.get_default("runs"):
            args.runs = str(Path(args.out).resolve().parent / "overhead_runs")
    return args


def _python() -> str:
    """The interpreter as the command line would name it (relative inside the repository)."""
    python = Path(sys.executable)
    return os.path.relpath(python, ROOT) if str(python).startswith(str(ROOT)) else str(python)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.synthetic_child:
        print(json.dumps(synthetic_child(args)))
        return
    payload = {
        "benchmark": "per-step cost of soft targets (issue 13 overhead benchmark)",
        "command": " ".join(shlex.quote(part) for part in [_python(), os.path.relpath(__file__, ROOT),
                                                            *(sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick, "machine": machine(),
        "timing": {"warmup_steps": args.warmup, "repeats": args.repeats, "steps_per_repeat": args.steps,
                   "fixed_batches": args.batches,
                   "method": "Keras' compiled train_function (train_step in a tf.function, as fit runs it) on "
                             "fixed batches; variants interleaved per repeat, order rotated; per-step wall time "
                             "per repeat, median over repeats"},
        "targets": {"label_smoothing_and_popularity_overhead": f"<= {OVERHEAD_TARGET:.0%} over base",
                    "teacher": "teacher step - base step <= teacher forward + 10 % (strict); also recorded: "
                               "teacher step <= 110 % of (base step + teacher forward)"},
    }
    if "lastfm" in args.parts:
        payload["lastfm"] = run_lastfm(args)
    if "synthetic" in args.parts:
        payload["synthetic"] = run_synthetic(args)
    summary = {}
    for tower, groups in payload.get("lastfm", {}).get("results", {}).items():
        for loss, group in groups.items():
            summary[f"{tower}/{loss}"] = group["targets_met"]
    payload["targets_met"] = summary
    payload["all_targets_met"] = all(v for checks in summary.values() for k, v in checks.items()
                                     if not k.endswith("_paired") and k != "teacher_le_110pct_of_base_plus_forward")
    write_result(args.out, payload)


if __name__ == "__main__":
    main()
