"""Grad-CAM heat maps: where in a slice the evidence for a label lies (Selvaraju et al. 2017, arXiv:1610.02391).

For a label the recipe names the network, its head unit and the nested backbone(s) to look at
(:meth:`ich.models.recipes.Recipe.cam_target`). At each such backbone's last feature map ``A`` (the map its global
average pooling reads: EfficientNetV2's ``top_activation``, ConvNeXt's last block), the weights are the
spatially averaged gradients of the label's logit ``y`` (the head unit before its sigmoid, so a saturated
probability still gives a map): ``alpha_k = mean_ij dy/dA_ij^k``. The map is ``sum_k alpha_k A^k``, upsampled
bilinearly to the image; several backbones' maps are summed; then ReLU (evidence for the label only) and
division by the image's maximum (an image without positive evidence keeps an all-zero map).

The gradient model exposes a nested backbone's feature map by re-wiring the network's own graph around it
(:func:`keras.models.clone_model` with the same layers and weights, the backbone replaced by a split of
itself); online augmentation layers are skipped and everything runs with ``training=False``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import keras
import numpy as np
import tensorflow as tf

from ich.inference.loading import LoadedModel
from ich.models.networks import BACKBONES, HEAD_LAYER

__all__ = ["MIN_MAP_SIDE", "auto_level", "gradcam", "gradcam_network", "overlay", "Explainer", "gradcam_explainer"]

#: Layers that only act while training (random flips and shifts inside the model): skipped when explaining.
_TRAINING_ONLY = (keras.layers.RandomFlip, keras.layers.RandomTranslation, keras.layers.RandomRotation, keras.layers.RandomZoom)

# Compiled Grad-CAM steps by network and backbone families: re-wiring and tracing a network costs seconds.
_GRADIENT_STEPS: weakref.WeakKeyDictionary[keras.Model, dict[tuple[tuple[str, ...], int], Callable]] = weakref.WeakKeyDictionary()


#: :func:`gradcam` looks at the last feature map at least this many pixels wide: at the demo's 64 px both backbones'
#: last maps are 2 x 2 (stride 32), whose upsampled peak always lies in a corner, so it reads an earlier block.
MIN_MAP_SIDE = 8


class _NoSuchMap(ValueError):
    """A backbone has no feature map at the level asked for."""


def auto_level(image_size: int, min_side: int = MIN_MAP_SIDE) -> int:
    """The feature-map level (0 = the backbone's last map, stride 32; k = the last map with ``2**k`` times its side)
    whose side is at least ``min_side`` for ``image_size`` inputs: 0 from 256 px up, 1 at 128 px, 2 at 64 px."""
    level, side = 0, max(image_size // 32, 1)
    while side * 2**level < min(min_side, image_size):
        level += 1
    return level


def gradcam(model: LoadedModel, inputs: np.ndarray, label: str, batch_size: int = 32, level: int | None = None) -> np.ndarray:
    """Grad-CAM heat maps of ``label`` for what the CNN reads.

    Args:
        model: a loaded model folder (:func:`ich.inference.loading.load_models`).
        inputs: ``(N, S, S, 3)`` images as the CNN reads them (:meth:`LoadedModel.model_inputs`): uint8 0..255
            or float in ``[0, 1]``.
        label: one of :data:`ich.core.labels.LABELS`.
        batch_size: images per gradient pass.
        level: the feature map (see :func:`gradcam_network`); ``None``: :func:`auto_level` of the image size, the
            last block whose map is at least :data:`MIN_MAP_SIDE` wide.

    Returns:
        ``(N, S, S)`` float32 maps in ``[0, 1]``, each scaled to its own maximum (all zero where the label's
        logit has no positive evidence anywhere).

    Raises:
        RecipeError: ``label`` is not a label of the recipe.
        ValueError: ``inputs`` are not ``(N, S, S, 3)`` at the network's input size.
    """
    target = model.recipe.cam_target(label)
    network = model.networks[target.network]
    if level is not None:
        return gradcam_network(network, inputs, target.output, target.backbones, batch_size, level)
    for candidate in range(auto_level(model.image_size), 0, -1):  # a backbone without that map: the next coarser one
        try:
            return gradcam_network(network, inputs, target.output, target.backbones, batch_size, candidate)
        except _NoSuchMap:
            continue
    return gradcam_network(network, inputs, target.output, target.backbones, batch_size, 0)


def gradcam_network(
    network: keras.Model, inputs: np.ndarray, output: int, backbones: Sequence[str], batch_size: int = 32, level: int = 0
) -> np.ndarray:
    """:func:`gradcam` on one network: the logit of head unit ``output``, at the last feature map of each
    nested backbone of the families ``backbones`` (summed). Same inputs and result as :func:`gradcam`.

    ``level`` 0 is that last feature map (what :func:`gradcam` uses); ``level`` k the last layer output of
    ``2**k`` times its side (an earlier block, finer and less semantic: at 64 px the last map is only 2 x 2).
    """
    if level < 0:
        raise ValueError(f"`level` must be 0 (the last feature map) or more. Received: {level}")
    images = _as_unit_float(inputs, network)
    families = tuple(backbones)
    head = network.get_layer(HEAD_LAYER)
    if not 0 <= output < int(head.units):
        raise ValueError(f"`output` must index one of the {head.units} units of {network.name}'s head. Received: {output}")
    step = _gradient_step(network, families, level)
    kernel = tf.cast(tf.convert_to_tensor(head.kernel)[:, output], tf.float32)
    bias = tf.cast(tf.convert_to_tensor(head.bias)[output], tf.float32) if head.use_bias else tf.constant(0.0)
    maps = [
        step(tf.convert_to_tensor(images[start : start + batch_size]), kernel, bias).numpy()
        for start in range(0, len(images), batch_size)
    ]
    if not maps:
        return np.zeros((0, *images.shape[1:3]), np.float32)
    return np.clip(np.concatenate(maps), 0.0, 1.0).astype(np.float32)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """A heat map in OpenCV's JET colours (blue 0 .. red 1) blended over an RGB slice.

    Args:
        image: ``(H, W, 3)`` RGB, uint8 0..255 or float in ``[0, 1]`` (the windowed slice).
        heatmap: ``(h, w)`` in ``[0, 1]``; resized bilinearly to ``(H, W)`` when it differs.
        alpha: the heat map's weight (0: the slice alone, 1: the colours alone).

    Returns:
        ``(H, W, 3)`` uint8 RGB: ``(1 - alpha) * image + alpha * colours``.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"`image` must be (H, W, 3) RGB. Received shape {image.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1]. Received: {alpha}")
    rgb = image.astype(np.float32) if image.dtype == np.uint8 else np.clip(image.astype(np.float32), 0.0, 1.0) * 255.0
    heat: np.ndarray = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0)
    if heat.ndim != 2:
        raise ValueError(f"`heatmap` must be 2-D (h, w). Received shape {heat.shape}")
    if heat.shape != image.shape[:2]:
        heat = cv2.resize(heat, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    levels = np.rint(np.clip(heat, 0.0, 1.0) * 255.0).astype(np.uint8)
    colours = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB).astype(np.float32)
    blended = (1.0 - alpha) * rgb + alpha * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _as_unit_float(inputs: np.ndarray, network: keras.Model) -> np.ndarray:
    """``inputs`` as float32 in ``[0, 1]`` (uint8 divided by 255), checked against the network's input shape."""
    inputs = np.asarray(inputs)
    expected = tuple(network.inputs[0].shape[1:])
    if inputs.ndim != 4 or (None not in expected and inputs.shape[1:] != expected):
        raise ValueError(f"`inputs` must be (N, {', '.join(map(str, expected))}) images. Received shape {inputs.shape}")
    if inputs.dtype == np.uint8:
        return inputs.astype(np.float32) / 255.0
    return inputs.astype(np.float32)


def _gradient_step(network: keras.Model, families: tuple[str, ...], level: int):
    """A compiled ``(images, head kernel column, head bias) -> (N, S, S) maps`` for ``network`` (cached)."""
    cached = _GRADIENT_STEPS.setdefault(network, {})
    if (families, level) not in cached:
        gradient_model = _build_gradient_model(network, families, level)

        @tf.function(reduce_retracing=True)
        def step(images: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
            size = tf.shape(images)[1:3]
            with tf.GradientTape() as tape:
                # Record from the input on: with frozen (non-trainable) layers nothing else would be watched.
                tape.watch(images)
                *features, pooled = gradient_model(images, training=False)
                logit = tf.linalg.matvec(tf.cast(pooled, tf.float32), kernel) + bias  # the head unit before its sigmoid
            gradients = tape.gradient(logit, features)
            total = tf.zeros(tf.concat([tf.shape(images)[:1], size], axis=0), tf.float32)
            for feature, gradient in zip(features, gradients):
                feature, gradient = tf.cast(feature, tf.float32), tf.cast(gradient, tf.float32)
                weights = tf.reduce_mean(gradient, axis=(1, 2), keepdims=True)  # alpha_k, per image and channel
                cam = tf.reduce_sum(weights * feature, axis=-1, keepdims=True)
                total += tf.image.resize(cam, size, method="bilinear")[..., 0]
            total = tf.nn.relu(total)
            return tf.math.divide_no_nan(total, tf.reduce_max(total, axis=(1, 2), keepdims=True))

        cached[families, level] = step
    return cached[families, level]


def _build_gradient_model(network: keras.Model, families: tuple[str, ...], level: int = 0) -> keras.Model:
    """``image -> [the feature map of each backbone of families (in that order), the head's input]``."""
    if not families:
        raise ValueError("Grad-CAM needs at least one backbone family")
    nested = {layer.name: layer for layer in network.layers if isinstance(layer, keras.Model) and layer.name in BACKBONES}
    chosen = []
    for family in families:
        matches = [layer for name, layer in nested.items() if BACKBONES[name].family == family]
        if len(matches) != 1:
            raise ValueError(
                f"Expected one {family} backbone in network {network.name!r}, found {len(matches)} "
                f"(its backbones: {', '.join(nested) or 'none'})"
            )
        chosen.append(matches[0])
    splits = {id(backbone): _split_at_pooling(backbone, level) for backbone in chosen}
    head = network.get_layer(HEAD_LAYER)
    captured: dict[int, keras.KerasTensor] = {}
    head_inputs: list[keras.KerasTensor] = []

    def call(layer, *args, **kwargs):
        if isinstance(layer, _TRAINING_ONLY):
            return args[0]
        if id(layer) in splits:
            feature, pooled = splits[id(layer)](*args, **kwargs)
            captured[id(layer)] = feature
            return pooled
        if layer is head:
            head_inputs.append(args[0])
        return layer(*args, **kwargs)

    rewired = keras.models.clone_model(network, clone_function=lambda layer: layer, call_function=call)
    if len(head_inputs) != 1 or len(captured) != len(chosen):
        raise ValueError(f"Network {network.name!r} does not call its head and backbones once each; cannot explain it")
    return keras.Model(rewired.inputs, [*(captured[id(backbone)] for backbone in chosen), head_inputs[0]])


def _split_at_pooling(model: keras.Model, level: int = 0) -> keras.Model:
    """``model``'s own input -> ``[the 4-D map its final GlobalAveragePooling2D reads, model's output]``,
    opening nested models down to that pooling layer (EfficientNet's squeeze-excitation poolings come earlier
    in the graph; a Functional model lists its layers from input to output). ``level``: see
    :func:`gradcam_network`."""
    final = _final_pooling_holder(model)
    if final is None:
        raise ValueError(f"{model.name!r} has no GlobalAveragePooling2D (nested or not) to explain at")
    if isinstance(final, keras.layers.GlobalAveragePooling2D):
        return keras.Model(model.inputs, [_feature_map(model, final, level), model.outputs[0]])
    inner = _split_at_pooling(final, level)
    captured: list[keras.KerasTensor] = []

    def call(layer, *args, **kwargs):
        if layer is final:
            feature, pooled = inner(*args, **kwargs)
            captured.append(feature)
            return pooled
        return layer(*args, **kwargs)

    rewired = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)
    return keras.Model(rewired.inputs, [captured[0], rewired.outputs[0]])


def _feature_map(model: keras.Model, pooling: keras.layers.Layer, level: int) -> keras.KerasTensor:
    """The map ``pooling`` reads (level 0), or the last layer output of ``model`` with ``2**level`` times its side."""
    last = pooling.input
    if level == 0:
        return last
    side = last.shape[1] * 2**level
    candidates = [
        layer.output
        for layer in model.layers
        if len(getattr(layer, "_inbound_nodes", [])) == 1 and len(layer.output.shape) == 4 and layer.output.shape[1] == side
    ]
    if not candidates:
        raise _NoSuchMap(
            f"{model.name!r} has no {side} x {side} feature map (level {level} of a {last.shape[1]} x {last.shape[1]} one)"
        )
    return candidates[-1]


def _final_pooling_holder(model: keras.Model) -> keras.layers.Layer | None:
    """The last layer of ``model`` that is a GlobalAveragePooling2D or a nested model holding one."""
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.GlobalAveragePooling2D):
            return layer
        if isinstance(layer, keras.Model) and _final_pooling_holder(layer) is not None:
            return layer
    return None


@dataclass(frozen=True)
class Explainer:
    """Where the report's Grad-CAM overlays come from (what :class:`ich.reports.predict_page.Explains` asks for).

    ``heatmaps(inputs, label)``: the model's inputs ``(N, S, S, 3)`` (:meth:`LoadedModel.model_inputs`) -> ``(N, S, S)``
    float maps in [0, 1] for ``label``; ``overlay(image, heatmap)``: a ``(H, W, 3)`` uint8 RGB slice and its ``(H, W)``
    map -> ``(H, W, 3)`` uint8.
    """

    heatmaps: Callable[[np.ndarray, str], np.ndarray]
    overlay: Callable[[np.ndarray, np.ndarray], np.ndarray]


def gradcam_explainer(model: LoadedModel) -> Explainer:
    """Grad-CAM of ``model`` (:func:`gradcam`), drawn with :func:`overlay`."""
    return Explainer(lambda inputs, label: gradcam(model, inputs, label), overlay)
