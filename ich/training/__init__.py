"""Training: the trainer with dvclive logging, tf.data datasets, resume after a kill and the runtime (devices,
precision, distribution)."""
