"""The training runtime: seeds, op determinism, mixed precision, XLA and the tf.distribute strategy."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

__all__ = ["Runtime", "configure_runtime", "output_root"]

logger = logging.getLogger("ich")


@dataclass(frozen=True)
class Runtime:
    """What :func:`configure_runtime` decided: the strategy and the effective switches."""

    strategy: tf.distribute.Strategy
    mixed_precision: bool
    jit_compile: bool
    gpus: int
    is_chief: bool = True  # False on the non-chief workers of a multi-worker run (they write no outputs)


def _switch(value: str | bool, default: bool, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value == "auto":
        return default
    raise ValueError(f"`{name}` must be true, false or auto. Received: {value!r}")


def configure_runtime(
    seed: int,
    deterministic: bool,
    mixed_precision: str | bool,
    jit_compile: str | bool,
    strategy: str,
) -> Runtime:
    """Seed everything once, choose precision, XLA and the tf.distribute strategy.

    ``auto`` turns mixed precision and XLA on only where a GPU is present, and picks
    MirroredStrategy when there are several GPUs. ``multi_worker`` reads the cluster from ``TF_CONFIG``.
    """
    keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow seeds in one call
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    gpus = len(tf.config.list_physical_devices("GPU"))
    use_mixed = _switch(mixed_precision, gpus > 0, "train.mixed_precision")
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mixed else "float32")
    use_xla = _switch(jit_compile, gpus > 0, "train.jit_compile")
    if strategy == "auto":
        chosen = tf.distribute.MirroredStrategy() if gpus > 1 else tf.distribute.get_strategy()
    elif strategy == "default":
        chosen = tf.distribute.get_strategy()
    elif strategy == "mirrored":
        # All GPUs; without GPUs, every logical CPU device (one unless the CPU was split, as in the tests).
        devices = None if gpus else [device.name for device in tf.config.list_logical_devices("CPU")]
        chosen = tf.distribute.MirroredStrategy(devices=devices)
    elif strategy == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("`train.strategy: multi_worker` needs the TF_CONFIG environment variable (see docs/scaling.md).")
        chosen = _nested_reduce(tf.distribute.MultiWorkerMirroredStrategy())
    else:
        raise ValueError(f"`train.strategy` must be one of auto, default, mirrored, multi_worker. Received: {strategy!r}")
    logger.info(
        "runtime: %d GPU(s), strategy %s with %d replica(s), mixed precision %s, XLA %s",
        gpus,
        type(chosen).__name__,
        chosen.num_replicas_in_sync,
        use_mixed,
        use_xla,
    )
    resolver = getattr(chosen, "cluster_resolver", None) if strategy == "multi_worker" else None
    task_type = getattr(resolver, "task_type", None)
    task_id = getattr(resolver, "task_id", 0) or 0
    is_chief = task_type in (None, "chief") or (task_type == "worker" and task_id == 0 and not _has_chief())
    return Runtime(strategy=chosen, mixed_precision=use_mixed, jit_compile=use_xla, gpus=gpus, is_chief=is_chief)


def _nested_reduce(strategy: tf.distribute.Strategy) -> tf.distribute.Strategy:
    """Let ``strategy.reduce`` take a nested structure, as Keras 3's ``fit`` asks of it.

    Keras 3 reduces one whole ``(images, labels)`` batch to build the model symbolically, and reduces
    per-replica scalars (loss, metrics) with ``axis=0``; the collective all-reduce of
    MultiWorkerMirroredStrategy takes one value at a time and fails on both (keras-team/keras#20585).
    Reducing each element separately, and scalars across replicas only, is the intended operation.
    """
    reduce_one = strategy.reduce

    def reduce_item(reduce_op, item, axis):
        # Keras also asks for `axis=0` on per-replica scalars (loss, metrics): that is a reduction
        # across replicas only, `axis=None`.
        local = strategy.experimental_local_results(item)[0] if isinstance(item, tf.distribute.DistributedValues) else item
        if axis is not None and getattr(getattr(local, "shape", None), "rank", None) == 0:
            axis = None
        return reduce_one(reduce_op, item, axis=axis)

    def reduce(reduce_op, value, axis=None):
        return tf.nest.map_structure(lambda item: reduce_item(reduce_op, item, axis), value)

    strategy.reduce = reduce
    return strategy


def _has_chief() -> bool:
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return bool(cluster.get("chief"))


@contextlib.contextmanager
def output_root(runtime: Runtime) -> Iterator[Path]:
    """Where this process writes its outputs: the working directory for the chief; a scratch folder,
    deleted afterwards, for the non-chief workers of a multi-worker run (they train in lockstep but
    their outputs would collide with the chief's)."""
    if runtime.is_chief:
        yield Path(".")
        return
    scratch = Path(tempfile.mkdtemp(prefix="ich-worker-"))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
