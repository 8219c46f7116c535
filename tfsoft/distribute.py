"""Distribution strategies, the chief worker, and cross-replica arithmetic for a ``train_step``.

Three questions every distributed step asks, answered once here instead of in the model,
the losses and the gradients:

* **Which strategy?** :func:`make_strategy` builds ``default``, ``mirrored`` (optionally over N
  logical CPUs, so mirrored runs are testable without GPUs) or ``multi_worker`` (TF_CONFIG).
* **Who writes the run's files?** :func:`is_chief` (one process per job); :func:`write_dir`
  hands the other workers a private scratch directory for the saves they must take part in.
* **Where am I in the global batch?** :func:`num_replicas`, :func:`replica_id`,
  :func:`all_gather`, :func:`all_sum`, :func:`replica_offset`, :func:`global_count`,
  :func:`replica_seed`, and the negative draws :func:`draw_shared` / :func:`draw_local`.

The replica helpers work in any replica context (a Keras ``train_step`` under any strategy,
a ``strategy.run`` function, plain eager code). On one replica they return their input or a
Python number and add no op, so single-device numbers are bit-identical to code that never
heard of replicas. With more than one replica they must run in a replica context; called in
a cross-replica context they raise :class:`ConfigError`.

Example:
    >>> strategy = make_strategy("mirrored", cpu_replicas=2)   # before any other TF work
    >>> def step(ids):                                         # ids: this replica's [B_r]
    ...     every_id = all_gather(ids)                          # [Σ_r B_r], replica 0 first
    ...     first_row = replica_offset(tf.shape(ids)[0])        # where this replica's rows start
    ...     return every_id[first_row:first_row + tf.shape(ids)[0]]  # == ids
    >>> strategy.run(tf.function(step), (tf.constant([1, 2, 3]),))
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from tfsoft.backend import tf
from tfsoft.errors import ConfigError

#: Names accepted by :func:`make_strategy`.
STRATEGIES = ("default", "mirrored", "multi_worker")


# --------------------------------------------------------------------------- strategies
def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _split_cpu(replicas: int) -> None:
    """Split the first physical CPU into ``replicas`` logical devices (or find it already split)."""
    cpus = tf.config.list_physical_devices("CPU")  # does not initialise the runtime
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * replicas)
    except RuntimeError as error:  # "Virtual devices cannot be modified after being initialized"
        found = len(tf.config.list_logical_devices("CPU"))
        if found != replicas:
            raise ConfigError(
                f"cpu_replicas={replicas} needs the CPU split into {replicas} logical devices, but TensorFlow has "
                f"already initialised its devices with {found} logical CPU(s) ({error}); call "
                f"make_strategy('mirrored', cpu_replicas={replicas}) before any TensorFlow work in the process"
            ) from error


def make_strategy(name: str, cpu_replicas: int | None = None) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy called ``name``.

    * ``default``: ``tf.distribute.get_strategy()`` (the strategy in scope; one device if none).
    * ``mirrored``: ``MirroredStrategy`` over every GPU (the CPU if there is none), or, with
      ``cpu_replicas=N``, over ``/cpu:0 .. /cpu:N-1`` after splitting the first physical CPU
      into N logical devices. The split must happen before TensorFlow initialises its devices
      (before any op runs in the process); if that is too late, an existing split into exactly
      N logical CPUs is reused and anything else is a :class:`ConfigError`.
    * ``multi_worker``: ``MultiWorkerMirroredStrategy``; the cluster and this process's task
      come from the ``TF_CONFIG`` environment variable (one local worker if it is unset).

    Args:
        name: one of :data:`STRATEGIES`.
        cpu_replicas: only with ``mirrored``: number of logical CPU replicas (>= 1).
    Returns:
        A ``tf.distribute.Strategy``.
    Raises:
        ConfigError: unknown name, ``cpu_replicas`` with another strategy or < 1, a CPU split
            that comes too late, a malformed ``TF_CONFIG``.

    Example:
        >>> strategy = make_strategy("mirrored", cpu_replicas=2)
        >>> strategy.num_replicas_in_sync
        2
    """
    if not isinstance(name, str) or name not in STRATEGIES:
        raise ConfigError(f"distribute strategy must be one of {STRATEGIES}; got {name!r}")
    if cpu_replicas is not None:
        if name != "mirrored":
            raise ConfigError(f"cpu_replicas applies only to the 'mirrored' strategy; got strategy {name!r} "
                              f"with cpu_replicas={cpu_replicas!r}")
        cpu_replicas = _check_int("cpu_replicas", cpu_replicas, 1)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if cpu_replicas is None:
            return tf.distribute.MirroredStrategy()
        _split_cpu(cpu_replicas)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_replicas)])
    _tf_config_task(os.environ.get("TF_CONFIG"))  # a readable error before TensorFlow's own
    return tf.distribute.MultiWorkerMirroredStrategy()


# ------------------------------------------------------------------------------ chief
def _task_ids(addresses) -> set[int]:
    if isinstance(addresses, Mapping):  # sparse cluster spec: {task index: address}
        return {int(key) for key in addresses}
    if isinstance(addresses, (list, tuple)):
        return set(range(len(addresses)))
    raise ConfigError(f"TF_CONFIG cluster entries must be lists of 'host:port' addresses; got {addresses!r}")


def is_chief_task(task_type: str | None, task_id: int | None, cluster: Mapping) -> bool:
    """Whether the task ``(task_type, task_id)`` of ``cluster`` is the job's chief.

    The chief is the ``chief`` task, or ``worker`` 0 when the cluster has no ``chief``
    (TensorFlow's ``multi_worker_util.is_chief``; an ``evaluator`` is the chief of its own
    side job, as there). A process outside any cluster (``task_type`` None, or an empty
    cluster) is its own chief.

    Args:
        task_type: ``chief``, ``worker``, ``ps``, ``evaluator`` or None.
        task_id: index of the task among those of its type.
        cluster: ``{task type: [address, ...]}`` (``ClusterSpec.as_dict()`` or TF_CONFIG's ``cluster``).
    Returns:
        bool.
    Raises:
        ConfigError: a task type or index that the cluster does not list.

    Example:
        >>> is_chief_task("worker", 0, {"worker": ["a:1", "b:1"]})
        True
        >>> is_chief_task("worker", 0, {"chief": ["c:1"], "worker": ["a:1"]})
        False
    """
    cluster = dict(cluster or {})
    if task_type is None or not any(_task_ids(addresses) for addresses in cluster.values()):
        return True
    if task_type == "evaluator":
        return True
    if task_type not in cluster:
        raise ConfigError(f"task type {task_type!r} is not in the cluster; cluster has task types {sorted(cluster)}")
    ids = _task_ids(cluster[task_type])
    if isinstance(task_id, bool) or not isinstance(task_id, (int, np.integer)) or int(task_id) not in ids:
        raise ConfigError(f"task index {task_id!r} of type {task_type!r} is not in the cluster; "
                          f"expected one of {sorted(ids)}")
    return task_type == "chief" or (task_type == "worker" and int(task_id) == 0 and "chief" not in cluster)


def _tf_config_task(tf_config: str | Mapping | None) -> tuple[str | None, int | None, dict]:
    """(task type, task index, cluster) of a TF_CONFIG value (JSON text or dict); Nones if unset."""
    if tf_config is None or (isinstance(tf_config, str) and not tf_config.strip()):
        return None, None, {}
    if isinstance(tf_config, str):
        try:
            tf_config = json.loads(tf_config)
        except json.JSONDecodeError as error:
            raise ConfigError(f"TF_CONFIG must be JSON like {{\"cluster\": {{...}}, \"task\": {{\"type\": ..., "
                              f"\"index\": ...}}}}; got {tf_config!r} ({error})") from error
    if not isinstance(tf_config, Mapping):
        raise ConfigError(f"TF_CONFIG must be a JSON object with 'cluster' and 'task'; got {tf_config!r}")
    cluster, task = tf_config.get("cluster") or {}, tf_config.get("task") or {}
    if not isinstance(cluster, Mapping) or not isinstance(task, Mapping):
        raise ConfigError(f"TF_CONFIG 'cluster' and 'task' must be JSON objects; "
                          f"got cluster={cluster!r}, task={task!r}")
    task_type = task.get("type")
    if task_type is None and sum(len(_task_ids(addresses)) for addresses in cluster.values()) > 1:
        raise ConfigError(f"TF_CONFIG lists a cluster of several tasks ({dict(cluster)}) but no task "
                          "{'type': ..., 'index': ...} for this process")
    task_id = task.get("index", 0)
    is_chief_task(task_type, task_id, cluster)  # validates type and index
    return task_type, (None if task_type is None else int(task_id)), dict(cluster)


def _current_task(strategy) -> tuple[str | None, int | None, dict]:
    """This process's (task type, index, cluster): from the strategy's cluster resolver, else TF_CONFIG."""
    explicit = strategy is not None
    strategy = strategy if explicit else tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is not None:
        return resolver.task_type, resolver.task_id, resolver.cluster_spec().as_dict()
    if explicit:  # default, one-device or mirrored strategy: one process
        return None, None, {}
    return _tf_config_task(os.environ.get("TF_CONFIG"))


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process is the one that writes the run's files.

    True for a single-process strategy (default, one device, mirrored). Under a strategy with
    a cluster (``multi_worker``) it is :func:`is_chief_task` of the strategy's
    ``cluster_resolver``: the ``chief`` task, or worker 0 when there is no chief. With
    ``strategy=None``, the strategy in scope decides if it has a cluster; otherwise the
    ``TF_CONFIG`` environment variable (so the answer is right before the strategy exists).

    Args:
        strategy: a ``tf.distribute.Strategy``; None = the current one, then TF_CONFIG.
    Returns:
        bool.
    Raises:
        ConfigError: a malformed ``TF_CONFIG`` (read only when ``strategy`` is None).

    Example:
        >>> os.environ["TF_CONFIG"] = '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}'
        >>> is_chief()
        False
    """
    task_type, task_id, cluster = _current_task(strategy)
    return is_chief_task(task_type, task_id, cluster)


@contextlib.contextmanager
def write_dir(root: str | os.PathLike, strategy: tf.distribute.Strategy | None = None) -> Iterator[Path]:
    """The directory this process saves into: ``root`` on the chief, a private scratch elsewhere.

    Under ``multi_worker`` a save that runs collective ops (a ``tf.train.Checkpoint`` or
    SavedModel of mirrored variables) must be made by every worker, but only the chief's copy
    is kept (Keras' multi-worker checkpointing pattern). Unlike Keras, which writes the other
    workers' copies into ``root/workertemp_<id>`` and deletes them afterwards, the scratch
    directory here is a fresh ``tempfile.mkdtemp`` (``$TMPDIR``) removed on exit: the run
    directory never holds a partial worker copy, even after a crash, and two workers sharing
    a file system never collide. Files that need no collective (configs, metrics, plots) should
    simply be written ``if is_chief():`` — no scratch at all.

    Args:
        root: the run directory (created on the chief if missing).
        strategy: as for :func:`is_chief`.
    Yields:
        ``Path(root)`` on the chief; a private temporary directory (deleted on exit) on others.

    Example:
        >>> with write_dir(run_dir, strategy) as directory:
        ...     checkpoint.save(directory / "ckpt")   # every worker calls save
    """
    root = Path(root)
    task_type, task_id, cluster = _current_task(strategy)
    if is_chief_task(task_type, task_id, cluster):
        root.mkdir(parents=True, exist_ok=True)
        yield root
        return
    scratch = Path(tempfile.mkdtemp(prefix=f"tfsoft-{task_type}{task_id}-"))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ------------------------------------------------------------------- replica context
def num_replicas() -> int:
    """Replicas in sync (all workers' together) of the current context; 1 without a strategy.

    Returns:
        Python int.
    """
    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context: inside strategy.scope(), outside strategy.run
        return int(tf.distribute.get_strategy().num_replicas_in_sync)
    return int(context.num_replicas_in_sync)


def _replica_context(what: str):
    context = tf.distribute.get_replica_context()
    if context is None:
        raise ConfigError(f"{what} needs a replica context (inside strategy.run or a Keras train_step) with "
                          f"{tf.distribute.get_strategy().num_replicas_in_sync} replicas; got the cross-replica "
                          "context of strategy.scope()")
    return context


def replica_id():
    """This replica's index among the replicas in sync: 0 (Python int) on one replica.

    Returns:
        0, or a scalar int32 tensor in ``[0, num_replicas())``.
    """
    if num_replicas() == 1:
        return 0
    return tf.cast(_replica_context("replica_id()").replica_id_in_sync_group, tf.int32)


def _check_rank(tensor, what: str) -> None:
    rank = getattr(getattr(tensor, "shape", None), "rank", None)
    if rank == 0:
        raise ConfigError(f"{what} concatenates along axis 0 and needs a tensor of rank >= 1; got shape {tensor.shape}")


def all_gather(tensor):
    """Concatenate ``tensor`` across replicas along axis 0, replica 0's rows first.

    Replicas may hold different numbers of rows (e.g. after masking padding positions); the
    other dimensions must agree. Gathers ``tf.identity(tensor)``: a raw input tensor fails
    under MultiWorkerMirroredStrategy ("destinations can not be empty"). Differentiable: each
    replica receives the gradient of its own rows.

    Args:
        tensor: [B_r, ...] on replica r.
    Returns:
        [Σ_r B_r, ...]; ``tensor`` itself on one replica.

    Example:
        >>> all_gather(tf.constant([[1.0], [2.0]]))   # one replica: the input
    """
    _check_rank(tensor, "all_gather")
    if num_replicas() == 1:
        return tensor
    return _replica_context("all_gather").all_gather(tf.identity(tensor), axis=0)


def all_sum(tensor):
    """Element-wise sum of ``tensor`` over replicas (all-reduce SUM); every replica gets it.

    Args:
        tensor: any shape, the same on every replica.
    Returns:
        Same shape and dtype; ``tensor`` itself on one replica.
    """
    if num_replicas() == 1:
        return tensor
    return _replica_context("all_sum").all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(tensor))


def replica_counts(local_count):
    """Every replica's ``local_count``, in replica order: ``[c_0, ..., c_{R-1}]`` (int64).

    Args:
        local_count: scalar integer (Python int or tensor), e.g. ``tf.shape(x)[0]``.
    Returns:
        int64 [R]; ``[local_count]`` as a tensor on one replica.
    """
    count = tf.reshape(tf.cast(local_count, tf.int64), [1])
    if num_replicas() == 1:
        return count
    return _replica_context("replica_counts").all_gather(tf.identity(count), axis=0)


def replica_offset(local_count):
    """Row of this replica's first example in the gathered batch: ``Σ_{r < replica_id} c_r``.

    The exclusive prefix sum of the replicas' ``local_count``, so it is right when replicas
    hold different numbers of rows (per-position training masks padding, so local batches
    differ after masking), unlike ``replica_id · local_count``. With :func:`all_gather`:
    ``all_gather(x)[replica_offset(n) + i] == x[i]`` for ``n = tf.shape(x)[0]``.

    Args:
        local_count: this replica's number of rows: scalar integer (Python int or tensor).
    Returns:
        0 (Python int) on one replica; else a scalar int32 tensor.

    Example:
        >>> # 2 replicas holding 3 and 5 rows: replica 0 -> 0, replica 1 -> 3
        >>> offset = replica_offset(tf.shape(target)[0])
    """
    if num_replicas() == 1:
        return 0
    before = tf.math.cumsum(replica_counts(local_count), exclusive=True)
    return tf.cast(tf.gather(before, replica_id()), tf.int32)


def global_count(local_count):
    """``Σ_r local_count_r``: e.g. the divisor of a global mean when local batches differ.

    Integer counts are summed exactly (gathered as int64, then cast back); float counts (a sum
    of sample weights) with an all-reduce SUM.

    Args:
        local_count: scalar, Python number or tensor.
    Returns:
        ``local_count`` itself on one replica; else a scalar tensor of its dtype.

    Example:
        >>> per_example = ...                                  # [B_r] losses of this replica
        >>> loss = tf.reduce_sum(per_example) / tf.cast(global_count(tf.shape(per_example)[0]), tf.float32)
    """
    if num_replicas() == 1:
        return local_count
    count = tf.convert_to_tensor(local_count)
    if count.dtype.is_integer:
        return tf.cast(tf.reduce_sum(replica_counts(count)), count.dtype)
    return all_sum(count)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an int; got {seed!r}")
    return int(seed)


def replica_seed(seed: int, step):
    """Seed of stateless random ops, distinct per replica and per step: ``[seed, step·R + replica_id]``.

    Reproducible (a function of seed, step, replica and replica count only) and different for
    every (step, replica) pair. Two independent streams in the same step need two seeds.

    Args:
        seed: Python int, the run's seed.
        step: scalar integer (Python int or tensor), e.g. ``optimizer.iterations``.
    Returns:
        int64 [2] tensor for ``tf.random.stateless_*``.

    Example:
        >>> u = tf.random.stateless_uniform([4], seed=replica_seed(0, model.optimizer.iterations))
    """
    seed = _check_seed(seed)
    counter = tf.cast(step, tf.int64)
    replicas = num_replicas()
    if replicas != 1:
        counter = counter * replicas + tf.cast(replica_id(), tf.int64)
    return tf.stack([tf.constant(seed, tf.int64), counter])


def _sampler_seed(sampler, seed) -> int:
    seed = getattr(sampler, "seed", None) if seed is None else seed
    if seed is None:
        raise ConfigError(f"drawing negatives on {num_replicas()} replicas needs a seed (each replica draws its "
                          "own share with replica_seed); got seed=None and a sampler without a seed")
    return _check_seed(seed)


def _check_num(num) -> None:
    if isinstance(num, bool) or (isinstance(num, (int, np.integer)) and num < 0) or isinstance(num, float):
        raise ConfigError(f"num must be an integer >= 0; got {num!r}")


def draw_shared(sampler, num, step, seed: int | None = None):
    """``num`` negatives shared by every replica, each replica drawing a different share.

    Replica r draws ``n = ⌈num / R⌉`` ids with the stateless seed ``replica_seed(seed, step)``;
    the shares are gathered (replica 0's first) and cut to the first ``num``. So every replica
    ends up with the same ``num`` i.i.d. draws from Q (the logQ correction with ``num`` draws
    stays right), the work of drawing and embedding is split, and no two replicas (or steps)
    repeat each other's draws. When R does not divide ``num`` the last ``R·n − num`` draws
    (the end of the last replicas' shares) are dropped; with ``num < R`` some replicas
    contribute nothing.

    On one replica this is exactly ``sampler.sample(num)``: the stateful op with the
    sampler's seed, so single-device runs keep their numbers (``seed`` and ``step`` unused).

    Args:
        sampler: a :class:`tfsoft.sampling.NegativeSampler` (``sample(num, shape, seed)``, ``seed``).
        num: number of shared negatives: Python int or scalar int tensor.
        step: scalar integer, e.g. ``optimizer.iterations``.
        seed: base seed of the per-replica draws; default the sampler's seed.
    Returns:
        int64 [num], the same on every replica.
    Raises:
        ConfigError: ``num`` < 0, or no seed on more than one replica.

    Example:
        >>> negatives = draw_shared(sampler, 1024, model.optimizer.iterations)
        >>> correction = sampler.log_expected_count(negatives, 1024)
    """
    _check_num(num)
    replicas = num_replicas()
    if replicas == 1:
        return sampler.sample(num)
    seed = _sampler_seed(sampler, seed)
    total = tf.cast(tf.reshape(num, []), tf.int32)
    share = (total + replicas - 1) // replicas
    ids = all_gather(sampler.sample(share, seed=replica_seed(seed, step)))
    return ids[:total]


def draw_local(sampler, num, step, seed: int | None = None, shape=None):
    """``num`` negatives for this replica's own examples, different on every replica.

    For per-example negatives (``[B, N]``), which are not shared: each replica draws with
    ``replica_seed(seed, step)``. On one replica this is exactly ``sampler.sample(num,
    shape=shape)`` (stateful, the sampler's seed).

    Args:
        sampler: a :class:`tfsoft.sampling.NegativeSampler`.
        num: number of draws: Python int or scalar int tensor.
        step: scalar integer, e.g. ``optimizer.iterations``.
        seed: base seed; default the sampler's seed.
        shape: optional target shape, product = num (e.g. ``[B, N]``).
    Returns:
        int64 [num], or ``shape``.

    Example:
        >>> negatives = draw_local(sampler, batch * 4, model.optimizer.iterations, shape=[batch, 4])
    """
    _check_num(num)
    if num_replicas() == 1:
        return sampler.sample(num, shape=shape)
    return sampler.sample(num, shape=shape, seed=replica_seed(_sampler_seed(sampler, seed), step))


__all__ = [
    "STRATEGIES",
    "all_gather",
    "all_sum",
    "draw_local",
    "draw_shared",
    "global_count",
    "is_chief",
    "is_chief_task",
    "make_strategy",
    "num_replicas",
    "replica_counts",
    "replica_id",
    "replica_offset",
    "replica_seed",
    "write_dir",
]
