"""Where training runs: tf.distribute strategies, the chief of a multi-worker run, LR scaling.

    trainer.strategy   auto | one_device | mirrored | multi_worker | tpu
    trainer.lr_scaling none | linear | sqrt

`data.batch_size` is the GLOBAL batch: each of R replicas gets batch_size / R images per
step, so the same config takes the same optimisation steps on 1 or 8 GPUs and keeps its LR
(`lr_scaling=none`). When you grow the batch with the replicas (`data.batch_size=32*R`),
`linear` multiplies every stage's LR by R (Goyal et al. 2017), `sqrt` by sqrt(R).

tf.distribute exists only on the TensorFlow backend: under KERAS_BACKEND=jax or torch,
`auto` and `one_device` are no-ops (`make_strategy` returns None, `scope(None)` is a null
context) and the others are refused. Nothing here imports TensorFlow at module level:
`check_strategy_config` and `is_chief` run before TensorFlow starts.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

from tlkit.config.schema import BNPolicy, LRScaling, StrategyName, TrainerConfig
from tlkit.errors import ConfigError

log = logging.getLogger("tlkit.train")
TF_ONLY = (StrategyName.mirrored, StrategyName.multi_worker, StrategyName.tpu)
_PROCESS_WIDE: dict = {}  # strategies that can be made once per process (collective ops, TPU system)


# --------------------------------------------------------------------------- TF_CONFIG (no TensorFlow)


def tf_config() -> dict:
    """The parsed TF_CONFIG environment variable ({} when unset)."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return {}
    allowed = 'JSON like {"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}'
    try:
        conf = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError("TF_CONFIG", text, allowed, hint=f"not JSON: {error}") from None
    if not isinstance(conf, dict) or not isinstance(conf.get("cluster", {}), dict):
        raise ConfigError("TF_CONFIG", text, allowed)
    return conf


def cluster_size(conf: dict | None = None) -> int:
    """How many training tasks (chief + workers) TF_CONFIG lists; 1 without TF_CONFIG."""
    cluster = (tf_config() if conf is None else conf).get("cluster", {})
    return max(1, sum(len(cluster.get(kind, [])) for kind in ("chief", "worker")))


def task() -> tuple[str, int]:
    """(task type, index) of this process in TF_CONFIG; ("worker", 0) without one."""
    spec = tf_config().get("task") or {}
    return str(spec.get("type", "worker")), int(spec.get("index", 0))


def is_chief() -> bool:
    """Whether this process writes the run directory (model.keras, metrics.json, eval/, checkpoints, logs).

    False only in a non-chief task of a multi-worker cluster: the "chief" task when TF_CONFIG
    lists one, else worker 0 (TensorFlow's rule). Reads TF_CONFIG only, so it can be called
    anywhere, before or after the strategy is made.
    """
    conf = tf_config()
    if cluster_size(conf) <= 1:
        return True
    kind, index = task()
    if conf["cluster"].get("chief"):
        return kind == "chief"
    return kind == "worker" and index == 0


def check_strategy_config(trainer: TrainerConfig) -> None:
    """Refuse combinations that cannot work, before TensorFlow starts (called by config.validate)."""
    choice = StrategyName(trainer.strategy)
    size = cluster_size()
    if size > 1 and choice not in (StrategyName.auto, StrategyName.multi_worker):
        raise ConfigError(
            "trainer.strategy", choice.value, f"auto or multi_worker while TF_CONFIG lists a cluster of {size} tasks",
            hint="unset TF_CONFIG to train on this machine only",
        )
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if choice in TF_ONLY and backend != "tensorflow":
        raise ConfigError("trainer.strategy", choice.value, _non_tf_allowed(backend))


def _non_tf_allowed(backend: str) -> str:
    return (f"auto or one_device under KERAS_BACKEND={backend} (tf.distribute needs the TensorFlow backend; "
            f"run with KERAS_BACKEND=tensorflow)")


# --------------------------------------------------------------------------- strategies


def _backend() -> str:
    import keras

    return keras.backend.backend()


def resolve(choice: StrategyName) -> StrategyName:
    """What `auto` means here: multi_worker with a TF_CONFIG cluster, mirrored with 2+ GPUs, else one_device."""
    choice = StrategyName(choice)
    if choice != StrategyName.auto:
        return choice
    if _backend() != "tensorflow":
        return StrategyName.one_device
    if cluster_size() > 1:
        return StrategyName.multi_worker
    import tensorflow as tf

    return StrategyName.mirrored if len(tf.config.list_physical_devices("GPU")) > 1 else StrategyName.one_device


def make_strategy(trainer: TrainerConfig):
    """The tf.distribute.Strategy for `trainer.strategy`, or None for Keras's default (one device).

    Call it before any TensorFlow op runs: MultiWorkerMirroredStrategy configures collective
    ops, which TensorFlow allows only at program start.
    """
    choice = StrategyName(trainer.strategy)
    backend = _backend()
    if backend != "tensorflow":
        if choice in TF_ONLY:
            raise ConfigError("trainer.strategy", choice.value, _non_tf_allowed(backend))
        return None  # auto / one_device: Keras places the model on the backend's default device
    name = resolve(choice)
    if name == StrategyName.one_device and choice == StrategyName.auto:
        return None  # the default strategy: no scope, no tf.distribute overhead
    import tensorflow as tf

    if name == StrategyName.one_device:
        return tf.distribute.OneDeviceStrategy("/gpu:0" if tf.config.list_physical_devices("GPU") else "/cpu:0")
    if name == StrategyName.mirrored:
        gpus = tf.config.list_logical_devices("GPU")
        # Without GPUs, the logical CPUs (tf.config.set_logical_device_configuration): how it is tested.
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name not in _PROCESS_WIDE:
        if name == StrategyName.multi_worker:
            if cluster_size() <= 1:
                log.warning("trainer.strategy=multi_worker without a TF_CONFIG cluster: training on this machine only")
            _PROCESS_WIDE[name] = tf.distribute.MultiWorkerMirroredStrategy()
            _patch_keras_for_multi_worker()
        else:
            # $TPU_NAME names a TPU node; without it, the TPU VM this process runs on.
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME") or "local")
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            _PROCESS_WIDE[name] = tf.distribute.TPUStrategy(resolver)
    return _PROCESS_WIDE[name]


def _patch_keras_for_multi_worker() -> None:
    """Two Keras 3.15.1 bugs stop fit() under MultiWorkerMirroredStrategy (keras-team/keras#20585);
    both fixes apply to multi-worker strategies only.

    1. Before the first step, fit() learns the input shapes by `strategy.reduce("MEAN", batch)`
       over the whole (images, labels) tuple, which a multi-worker strategy cannot reduce
       ("Attempt to convert a value (PerReplica...)"). Only the shapes are used: take the
       first local replica's batch.
    2. Each step's logs are reduced by `strategy.reduce("MEAN", value, axis=0)`: on the scalar
       loss and metrics, "Invalid reduction dimension 0". The mean over all replicas
       (axis=None) is what MirroredStrategy computes on one machine.
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(tf_trainer.reduce_per_replica, "tlkit_patched", False):
        return
    original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
    original_reduce = tf_trainer.reduce_per_replica

    def multi_worker(strategy) -> bool:
        return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is not None and multi_worker(strategy):
            for _, _, it in iterator:  # the original's protocol: one batch of a fresh iterator
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v, next(it))
                break
            iterator = None
        return original_build(self, iterator=iterator, data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and multi_worker(strategy):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None)
                if isinstance(v, tf.distribute.DistributedValues) else v, values)
        return original_reduce(values, strategy, reduction)

    reduce_per_replica.tlkit_patched = True
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica


def replicas(strategy) -> int:
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def scope(strategy):
    """Build and compile inside this: variables (weights, optimizer slots, metrics) live on every replica."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()


def model_scope(model):
    """The scope of the strategy `model` was built under (a null context when none, or off TensorFlow)."""
    return scope(model_strategy(model))


def model_strategy(model):
    """The strategy `model` was built under, or None (no strategy, or not the TensorFlow backend)."""
    return getattr(model, "_distribute_strategy", None) if _backend() == "tensorflow" else None


def strategy_name(strategy) -> str:
    if strategy is None:
        return "default"
    import tensorflow as tf

    for name, kind in (("multi_worker", tf.distribute.MultiWorkerMirroredStrategy), ("tpu", tf.distribute.TPUStrategy),
                       ("mirrored", tf.distribute.MirroredStrategy), ("one_device", tf.distribute.OneDeviceStrategy)):
        if isinstance(strategy, kind):
            return name
    return type(strategy).__name__


def is_multi_worker(strategy) -> bool:
    return strategy is not None and strategy_name(strategy) == "multi_worker"


def lr_factor(rule: LRScaling, num_replicas: int) -> float:
    """What every stage's LR is multiplied by on `num_replicas` replicas."""
    rule = LRScaling(rule)
    if rule == LRScaling.linear:
        return float(num_replicas)
    if rule == LRScaling.sqrt:
        return math.sqrt(num_replicas)
    return 1.0


def describe(strategy, trainer: TrainerConfig, global_batch: int) -> str:
    """One log line: the strategy, the replicas, the batch per replica and the LR factor."""
    count = replicas(strategy)
    name = "default (one device)" if strategy is None else strategy_name(strategy)
    text = (f"strategy {name}, {count} replica(s), global batch {global_batch} "
            f"({global_batch / count:g} per replica), lr x {lr_factor(trainer.lr_scaling, count):g} "
            f"(trainer.lr_scaling={LRScaling(trainer.lr_scaling).value})")
    if cluster_size() > 1:
        kind, index = task()
        text += f", task {kind} {index} of {cluster_size()}{' (chief)' if is_chief() else ''}"
    return text


def check_batch(strategy, global_batch: int, bn=None) -> None:
    """The global batch against the replicas; `bn`: schedule.bn (BatchNorm statistics are per replica)."""
    count = replicas(strategy)
    if global_batch < count:
        raise ConfigError("data.batch_size", global_batch,
                          f"at least the number of replicas ({count}): data.batch_size is the global batch")
    if global_batch % count:
        log.warning("data.batch_size=%d is not a multiple of the %d replicas: replicas get unequal batches",
                    global_batch, count)
    # Keras keeps BatchNorm statistics per replica (no SyncBatchNorm here): each normalises its own share.
    if count > 1 and bn is not None and BNPolicy(bn) == BNPolicy.train and global_batch // count < 16:
        log.warning("schedule.bn=train on %d replicas: BatchNorm sees %d images per replica; use schedule.bn=frozen "
                    "or data.batch_size >= %d", count, global_batch // count, 16 * count)


def feature_cache_supported(model) -> bool:
    """The feature cache trains on in-process numpy features: fine on one machine, not across workers
    (each would extract features through collective ops, then shard host arrays on its own)."""
    return not is_multi_worker(model_strategy(model))


# --------------------------------------------------------------------------- where a worker writes


def output_dir(run_dir: Path) -> Path:
    """`run_dir` on the chief; on another worker a private temporary folder, removed when the process exits.

    Every worker runs the same code (evaluate and predict are collective operations under
    MultiWorkerMirroredStrategy), so a worker writes its copies of the files somewhere no
    one reads: only the chief's reach the run directory.
    """
    if is_chief():
        return Path(run_dir)
    kind, index = task()
    folder = tempfile.mkdtemp(prefix=f"tlkit-{kind}{index}-")
    atexit.register(shutil.rmtree, folder, True)
    log.info("%s %d is not the chief: its files go to %s (removed at exit); the chief writes %s",
             kind, index, folder, run_dir)
    return Path(folder)
