"""tfsoft.distribute: strategies, the chief, replica arithmetic and per-replica negative draws.

One-replica behaviour is checked in this process (identity, no new numbers). Mirrored checks
need the CPU split into two logical devices before TensorFlow touches its devices, so they run
in a subprocess (one per script, shared by the tests through a module fixture).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tfsoft import distribute
from tfsoft.backend import tf
from tfsoft.errors import ConfigError
from tfsoft.sampling import NegativeSampler, uniform_proposal

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, env: dict | None = None) -> dict:
    environ = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    environ.update(env or {})
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env=environ)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------- mirrored, 2 CPUs
MIRRORED = """
    import json
    import numpy as np
    from tfsoft import distribute
    from tfsoft.backend import tf
    from tfsoft.errors import ConfigError
    from tfsoft.sampling import NegativeSampler, uniform_proposal

    strategy = distribute.make_strategy("mirrored", cpu_replicas=2)
    out = {"replicas": strategy.num_replicas_in_sync, "chief": distribute.is_chief(strategy)}
    out["again"] = distribute.make_strategy("mirrored", cpu_replicas=2).num_replicas_in_sync  # reuses the split
    try:
        distribute.make_strategy("mirrored", cpu_replicas=3)
    except ConfigError as error:
        out["too_late"] = str(error)

    sampler = NegativeSampler(uniform_proposal(1001), seed=7)
    weights = tf.range(1.0, 9.0)  # one weight per gathered row (3 + 5 rows)

    @tf.function
    def step():
        rid = distribute.replica_id()
        n = 3 + 2 * rid  # replica 0 holds 3 rows, replica 1 holds 5 (e.g. after masking padding)
        x = tf.range(n) * 10 + 100 * rid
        values = tf.cast(x, tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(values)
            gathered_values = distribute.all_gather(values)
            loss = tf.reduce_sum(gathered_values * weights) * tf.cast(rid + 1, tf.float32)
        offset = distribute.replica_offset(tf.shape(x)[0])
        return {
            "num_replicas": tf.constant(distribute.num_replicas()),
            "replica_id": rid,
            "local": x,
            "offset": offset,
            "own_rows": distribute.all_gather(x)[offset:offset + n],
            "gathered": distribute.all_gather(x),
            "counts": distribute.replica_counts(n),
            "global_count": distribute.global_count(tf.shape(x)[0]),
            "global_weight": distribute.global_count(tf.cast(n, tf.float32) / 2),
            "all_sum": distribute.all_sum(tf.stack([1.0, tf.cast(rid, tf.float32)])),
            "gradient": tape.gradient(loss, values),
            "seeds": tf.stack([distribute.replica_seed(5, s) for s in (0, 1, 2)]),
            "shared_10": distribute.draw_shared(sampler, 10, step=3),
            "shared_7": distribute.draw_shared(sampler, 7, step=tf.constant(3, tf.int64)),
            "shared_1": distribute.draw_shared(sampler, 1, step=3),
            "local_draw": distribute.draw_local(sampler, 6, step=3, shape=[2, 3]),
        }

    per_replica = strategy.run(step)
    local = {key: strategy.experimental_local_results(value) for key, value in per_replica.items()}
    out["results"] = [{key: np.asarray(values[r]).tolist() for key, values in local.items()} for r in range(2)]

    # what each replica's share must be: a stateless draw seeded with replica_seed = [seed, step·R + r]
    out["expected_share_5"] = [sampler.sample(5, seed=tf.constant([7, 3 * 2 + r], tf.int64)).numpy().tolist()
                               for r in range(2)]
    out["expected_share_4"] = [sampler.sample(4, seed=tf.constant([7, 3 * 2 + r], tf.int64)).numpy().tolist()
                               for r in range(2)]
    out["expected_local"] = [sampler.sample(6, seed=tf.constant([7, 3 * 2 + r], tf.int64)).numpy().tolist()
                             for r in range(2)]

    unseeded = NegativeSampler(uniform_proposal(1001))
    try:  # eager: inside a tf.function, autograph re-raises a ConfigError as a StagingError
        strategy.run(lambda: distribute.draw_shared(unseeded, 4, step=0))
    except ConfigError as error:
        out["no_seed"] = str(error)
    with strategy.scope():
        try:
            distribute.all_gather(tf.constant([1, 2]))
        except ConfigError as error:
            out["cross_replica"] = str(error)
    print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def mirrored():
    return run_script(MIRRORED)


def test_make_strategy_splits_the_cpu_and_reuses_an_existing_split(mirrored):
    assert mirrored["replicas"] == 2 and mirrored["again"] == 2
    assert mirrored["chief"] is True
    assert "cpu_replicas=3" in mirrored["too_late"] and "2 logical CPU" in mirrored["too_late"]
    assert "before any TensorFlow work" in mirrored["too_late"]


def test_replica_offset_and_all_gather_with_unequal_local_counts(mirrored):
    results = mirrored["results"]
    counts = np.array([3, 5])
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])  # NumPy exclusive prefix sum
    expected = np.concatenate([np.arange(3) * 10, np.arange(5) * 10 + 100])  # replica 0's rows first
    for r, result in enumerate(results):
        assert result["num_replicas"] == 2 and result["replica_id"] == r
        assert result["offset"] == offsets[r]
        np.testing.assert_array_equal(result["gathered"], expected)
        np.testing.assert_array_equal(result["own_rows"], result["local"])
        np.testing.assert_array_equal(result["counts"], counts)
        assert result["global_count"] == 8 and result["global_weight"] == 4.0
        np.testing.assert_array_equal(result["all_sum"], [2.0, 1.0])


def test_all_gather_gradient_reaches_each_replica_rows(mirrored):
    # Replica k's loss is (k + 1) Σ_i w_i g_i; all_gather sums the replicas' gradients, so
    # replica r's rows get (1 + 2) · w over its own slice of the gathered batch.
    weights = np.arange(1.0, 9.0)
    for result in mirrored["results"]:
        start = result["offset"]
        np.testing.assert_allclose(result["gradient"], 3 * weights[start:start + len(result["local"])])


def test_replica_seed_differs_per_replica_and_step(mirrored):
    seeds = [tuple(seed) for result in mirrored["results"] for seed in result["seeds"]]
    assert len(set(seeds)) == len(seeds) == 6
    assert all(seed[0] == 5 for seed in seeds)
    assert sorted(seed[1] for seed in seeds) == list(range(6))  # step · 2 + replica_id


def test_shared_draw_splits_the_work_and_gathers_one_set(mirrored):
    results = mirrored["results"]
    shares = mirrored["expected_share_5"]
    assert shares[0] != shares[1]  # each replica drew a different share
    for result in results:
        assert result["shared_10"] == shares[0] + shares[1]  # the same gathered set on both
        # 7 = 4 + 4 - 1: ceil per replica, then the end of the last share is cut
        assert result["shared_7"] == (mirrored["expected_share_4"][0] + mirrored["expected_share_4"][1])[:7]
        assert len(result["shared_1"]) == 1
    assert results[0]["shared_1"] == results[1]["shared_1"]


def test_local_draws_differ_per_replica(mirrored):
    results = mirrored["results"]
    for r, result in enumerate(results):
        assert np.array(result["local_draw"]).shape == (2, 3)
        assert np.ravel(result["local_draw"]).tolist() == mirrored["expected_local"][r]
    assert results[0]["local_draw"] != results[1]["local_draw"]


def test_errors_on_several_replicas(mirrored):
    assert "needs a seed" in mirrored["no_seed"] and "seed=None" in mirrored["no_seed"]
    assert "replica context" in mirrored["cross_replica"] and "2 replicas" in mirrored["cross_replica"]


MULTI_WORKER = """
    import json
    from tfsoft import distribute
    strategy = distribute.make_strategy("multi_worker")
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "chief": distribute.is_chief(strategy),
                      "chief_in_scope": distribute.is_chief()}))
"""


def test_multi_worker_without_tf_config_is_one_chief_worker():
    out = run_script(MULTI_WORKER)
    assert out == {"replicas": 1, "chief": True, "chief_in_scope": True}


TWO_WORKERS = """
    import json, os, sys
    from tfsoft import distribute
    from tfsoft.backend import tf
    from tfsoft.sampling import NegativeSampler, uniform_proposal

    strategy = distribute.make_strategy("multi_worker")
    sampler = NegativeSampler(uniform_proposal(101), seed=3)

    @tf.function
    def step():
        rid = distribute.replica_id()
        x = tf.range(3 + 2 * rid) + 100 * rid  # worker 0 holds 3 rows, worker 1 holds 5
        return (distribute.replica_offset(tf.shape(x)[0]), distribute.all_gather(x),
                distribute.global_count(tf.shape(x)[0]), distribute.draw_shared(sampler, 7, step=2))

    results = [strategy.experimental_local_results(value)[0].numpy().tolist() for value in strategy.run(step)]
    # end with a collective: a worker that exits first stalls its peer (STACK.md)
    strategy.reduce("SUM", strategy.run(tf.function(lambda: tf.constant(1.0))), axis=None)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "chief": distribute.is_chief(strategy),
                      "chief_from_env": distribute.is_chief(), "offset": results[0], "gathered": results[1],
                      "total": results[2], "shared": results[3]}))
"""


def test_two_workers_agree_on_the_chief_offsets_and_shared_negatives():
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    environ = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    workers = []
    for index in range(2):
        tf_config = {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                     "task": {"type": "worker", "index": index}}
        workers.append(subprocess.Popen([sys.executable, "-c", textwrap.dedent(TWO_WORKERS)], cwd=ROOT, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env={**environ, "TF_CONFIG": json.dumps(tf_config)}))
    outs = []
    try:
        for worker in workers:
            stdout, stderr = worker.communicate(timeout=120)
            assert worker.returncode == 0, stderr[-3000:]
            outs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    assert [out["chief"] for out in outs] == [True, False] == [out["chief_from_env"] for out in outs]
    assert [out["offset"] for out in outs] == [0, 3]
    for out in outs:
        assert out["replicas"] == 2 and out["total"] == 8
        assert out["gathered"] == [0, 1, 2, 100, 101, 102, 103, 104]
        assert len(out["shared"]) == 7 and out["shared"] == outs[0]["shared"]


# ------------------------------------------------------------------- one replica, here
def test_one_replica_helpers_return_their_input_and_plain_values():
    x = tf.constant([[1.0, 2.0], [3.0, 4.0]])
    assert distribute.num_replicas() == 1
    assert distribute.replica_id() == 0 and isinstance(distribute.replica_id(), int)
    assert distribute.all_gather(x) is x
    assert distribute.all_sum(x) is x
    assert distribute.replica_offset(tf.shape(x)[0]) == 0 and isinstance(distribute.replica_offset(2), int)
    count = tf.shape(x)[0]
    assert distribute.global_count(count) is count and distribute.global_count(5) == 5
    np.testing.assert_array_equal(distribute.replica_counts(tf.constant(4)).numpy(), [4])
    np.testing.assert_array_equal(distribute.replica_seed(9, 4).numpy(), [9, 4])
    assert distribute.replica_seed(9, tf.constant(4, tf.int64)).dtype == tf.int64


def test_one_replica_helpers_inside_a_tf_function_under_one_device_strategy():
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")

    @tf.function
    def step(x):
        count = tf.shape(x)[0]
        return distribute.all_gather(x), distribute.replica_offset(count), distribute.global_count(count)

    gathered, offset, total = strategy.run(step, (tf.constant([3, 1, 2]),))
    np.testing.assert_array_equal(gathered.numpy(), [3, 1, 2])
    assert int(offset) == 0 and int(total) == 3
    graph = step.get_concrete_function(tf.TensorSpec([None], tf.int32)).graph
    assert not [op for op in graph.get_operations() if "Collective" in op.type or "Gather" in op.type]


def test_one_replica_shared_and_local_draws_equal_sampler_sample():
    sampler = NegativeSampler(uniform_proposal(501), seed=3)
    tf.random.set_seed(11)
    expected = [sampler.sample(64).numpy(), sampler.sample(12, shape=[3, 4]).numpy()]
    tf.random.set_seed(11)
    got = [distribute.draw_shared(sampler, 64, step=5, seed=99).numpy(),
           distribute.draw_local(sampler, 12, step=5, shape=[3, 4]).numpy()]
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a, b)

    @tf.function
    def shared():
        return distribute.draw_shared(sampler, 64, step=tf.constant(0, tf.int64))

    @tf.function
    def plain():
        return sampler.sample(64)

    tf.random.set_seed(11)
    a = plain().numpy()
    tf.random.set_seed(11)
    np.testing.assert_array_equal(a, shared().numpy())


# ------------------------------------------------------------------- errors and names
def test_make_strategy_rejects_unknown_names_and_misplaced_cpu_replicas():
    with pytest.raises(ConfigError, match=r"one of \('default', 'mirrored', 'multi_worker'\); got 'tpu'"):
        distribute.make_strategy("tpu")
    with pytest.raises(ConfigError, match=r"got None"):
        distribute.make_strategy(None)
    with pytest.raises(ConfigError, match=r"cpu_replicas applies only to the 'mirrored' strategy; got strategy 'def"):
        distribute.make_strategy("default", cpu_replicas=2)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match=r"cpu_replicas must be an integer >= 1; got"):
            distribute.make_strategy("mirrored", cpu_replicas=bad)
    assert distribute.make_strategy("default") is tf.distribute.get_strategy()


def test_make_strategy_after_devices_exist_reuses_the_same_count_or_says_when_to_split():
    found = len(tf.config.list_logical_devices("CPU"))  # initialises TensorFlow's devices
    assert distribute.make_strategy("mirrored", cpu_replicas=found).num_replicas_in_sync == found
    with pytest.raises(ConfigError, match=rf"cpu_replicas={found + 1}.*{found} logical CPU.*before any TensorFlow"):
        distribute.make_strategy("mirrored", cpu_replicas=found + 1)


def test_multi_worker_with_malformed_tf_config_is_a_config_error(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match=r"TF_CONFIG must be JSON.*got '\{not json'"):
        distribute.make_strategy("multi_worker")


def test_bad_values_are_config_errors():
    sampler = NegativeSampler(uniform_proposal(11), seed=0)
    with pytest.raises(ConfigError, match=r"num must be an integer >= 0; got -2"):
        distribute.draw_shared(sampler, -2, step=0)
    with pytest.raises(ConfigError, match=r"num must be an integer >= 0; got 2.5"):
        distribute.draw_local(sampler, 2.5, step=0)
    with pytest.raises(ConfigError, match=r"seed must be an int; got '1'"):
        distribute.replica_seed("1", 0)
    with pytest.raises(ConfigError, match=r"rank >= 1; got shape \(\)"):
        distribute.all_gather(tf.constant(1.0))


# ------------------------------------------------------------------------- chief
CLUSTER = {"worker": ["a:1", "b:1", "c:1"]}
WITH_CHIEF = {"chief": ["z:1"], "worker": ["a:1", "b:1"]}


@pytest.mark.parametrize("tf_config, chief", [
    (None, True),
    ({"cluster": WITH_CHIEF, "task": {"type": "chief", "index": 0}}, True),
    ({"cluster": WITH_CHIEF, "task": {"type": "worker", "index": 0}}, False),
    ({"cluster": CLUSTER, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": CLUSTER, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {**CLUSTER, "ps": ["p:1"]}, "task": {"type": "ps", "index": 0}}, False),
    ({"cluster": CLUSTER, "task": {"type": "evaluator", "index": 0}}, True),
    ({"cluster": {"worker": {"1": "b:1", "4": "e:1"}}, "task": {"type": "worker", "index": 4}}, False),
    ({"cluster": {"worker": ["a:1"]}}, True),
])
def test_is_chief_reads_tf_config(monkeypatch, tf_config, chief):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert distribute.is_chief() is chief


def test_single_process_strategies_are_chief_whatever_tf_config_says(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": CLUSTER, "task": {"type": "worker", "index": 1}}))
    assert distribute.is_chief(tf.distribute.get_strategy()) is True
    assert distribute.is_chief(tf.distribute.OneDeviceStrategy("/cpu:0")) is True


class _ClusterStrategy:
    """What is_chief reads of a multi-worker strategy: its cluster resolver."""

    def __init__(self, cluster, task_type, task_id):
        self.cluster_resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)


@pytest.mark.parametrize("cluster, task_type, task_id, chief", [
    (WITH_CHIEF, "chief", 0, True), (WITH_CHIEF, "worker", 0, False), (CLUSTER, "worker", 0, True),
    (CLUSTER, "worker", 2, False), ({}, None, None, True),
])
def test_is_chief_reads_the_strategy_cluster_resolver(monkeypatch, cluster, task_type, task_id, chief):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.is_chief(_ClusterStrategy(cluster, task_type, task_id)) is chief


@pytest.mark.parametrize("tf_config, match", [
    ("[1, 2", r"TF_CONFIG must be JSON"),
    ("[1, 2]", r"TF_CONFIG must be a JSON object with 'cluster' and 'task'; got \[1, 2\]"),
    (json.dumps({"cluster": CLUSTER, "task": {"type": "worker", "index": 3}}),
     r"task index 3 of type 'worker' is not in the cluster; expected one of \[0, 1, 2\]"),
    (json.dumps({"cluster": CLUSTER, "task": {"type": "chief", "index": 0}}),
     r"task type 'chief' is not in the cluster; cluster has task types \['worker'\]"),
    (json.dumps({"cluster": CLUSTER}), r"cluster of several tasks .* but no task"),
    (json.dumps({"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}),
     r"cluster entries must be lists of 'host:port' addresses; got 'a:1'"),
])
def test_malformed_tf_config_is_a_config_error(monkeypatch, tf_config, match):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ConfigError, match=match):
        distribute.is_chief()


def test_write_dir_is_the_root_on_the_chief_and_a_private_scratch_elsewhere(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    root = tmp_path / "run"
    with distribute.write_dir(root) as directory:
        assert directory == root and root.is_dir()
    with distribute.write_dir(root, _ClusterStrategy(CLUSTER, "worker", 1)) as directory:
        assert directory != root and root not in directory.parents and directory.is_dir()
        (directory / "ckpt").write_text("discarded")
        scratch = directory
    assert not scratch.exists()
    assert list(root.iterdir()) == []
