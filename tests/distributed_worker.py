"""One training process of the distributed tests: a tiny model through ``fit_phases`` under a tf.distribute
strategy. ``python -m tests.distributed_worker <strategy> <output dir> [logical CPUs]``; TF_CONFIG (for
``multi_worker``) comes from the environment. Prints one JSON line with what the test checks."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    strategy_name, output = sys.argv[1], Path(sys.argv[2])
    cpus = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    import tensorflow as tf

    if cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpus)
    import keras
    import numpy as np

    from dvclive import Live
    from ich.models.losses import WeightedBinaryCrossentropy
    from ich.training.resume import ResumeStore
    from ich.training.runtime import configure_runtime
    from ich.training.trainer import fit_phases, plan_phases

    runtime = configure_runtime(7, True, False, False, strategy_name)
    rng = np.random.default_rng(0)
    images = rng.random((64, 16, 16, 3)).astype("float32")
    labels = (images.mean(axis=(1, 2, 3)) > 0.5).astype("float32")[:, None]
    global_batch = 8 * runtime.strategy.num_replicas_in_sync
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(global_batch)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = data.with_options(options)
    with runtime.strategy.scope():
        model = keras.Sequential(
            [
                keras.Input((16, 16, 3)),
                keras.layers.Conv2D(4, 3, activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(1, activation="sigmoid"),
            ]
        )
    root = output if runtime.is_chief else output / "non-chief"
    store = ResumeStore(root / "checkpoints", "fingerprint", enabled=runtime.is_chief)
    with Live(str(root / "live"), dvcyaml=False, save_dvc_exp=False) as live:
        fit_phases(
            model,
            data,
            data,
            ["any"],
            plan_phases(False, 0, 1, 1e-2, 1e-3),
            WeightedBinaryCrossentropy([1.0]),
            str(store.best_checkpoint("model")),
            live,
            "model",
            patience=2,
            jit_compile=False,
            strategy=runtime.strategy,
            resume=store,
        )
    store.finish()
    mirrored = [
        type(variable.value if hasattr(variable, "value") else variable).__name__ for variable in model.optimizer.variables
    ]
    print(
        json.dumps(
            {
                "replicas": runtime.strategy.num_replicas_in_sync,
                "strategy": type(runtime.strategy).__name__,
                "chief": runtime.is_chief,
                "optimizer_variable_types": sorted(set(mirrored)),
                "optimizer_iterations": int(model.optimizer.iterations.numpy()),
                "weights_sum": float(sum(float(np.sum(weight)) for weight in model.get_weights())),
            }
        )
    )


if __name__ == "__main__":
    main()
