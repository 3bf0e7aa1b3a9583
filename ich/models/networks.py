"""Networks: the EfficientNetV2 and ConvNeXt backbones, attention fusion, and the heads recipes put on them.

Every model takes ``(H, W, 3)`` float32 images scaled to ``[0, 1]`` (the input pipeline's job); each
backbone scales them to 0..255 and applies Keras's own preprocessing for it inside the graph, so saved
models carry their preprocessing with them. Outputs are sigmoid probabilities in float32 (also under mixed precision).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
from keras import layers

__all__ = [
    "check_backbone",
    "HEAD_LAYER",
    "BACKBONES",
    "backbone_names",
    "build_backbone",
    "AttentionFusion",
    "LayerScale",
    "build_single",
    "build_subtype_fusion",
    "build_any_classifier",
    "resolve_weights",
]

#: The name of every network's output layer, a Dense head on the pooled features (the sequence model reads its input).
HEAD_LAYER = "probabilities"

#: ImageNet's per-channel mean and standard deviation of 0..255 RGB, as Keras's ConvNeXt normalises its input.
_IMAGENET_MEAN_255 = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_IMAGENET_VAR_255 = ((0.229 * 255) ** 2, (0.224 * 255) ** 2, (0.225 * 255) ** 2)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone: a keras.applications-style builder and its input normalisation."""

    builder: Callable[..., keras.Model]
    family: str  # "efficientnetv2" or "convnext"


@keras.saving.register_keras_serializable(package="ich")
class LayerScale(layers.Layer):
    """ConvNeXt's per-channel residual scale ``x * gamma``, gamma starting at ``init_values``
    (Touvron et al. 2021, arXiv:2103.17239)."""

    def __init__(self, init_values: float, projection_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.init_values = init_values
        self.projection_dim = projection_dim

    def build(self, _):
        self.gamma = self.add_weight(
            shape=(self.projection_dim,), initializer=keras.initializers.Constant(self.init_values), trainable=True
        )

    def call(self, x):
        return x * self.gamma

    def get_config(self):
        return {**super().get_config(), "init_values": self.init_values, "projection_dim": self.projection_dim}


def _convnext_block(x, projection_dim: int, name: str):
    """One ConvNeXt block (Liu et al. 2022): 7x7 depthwise conv, LayerNorm, 4x MLP with GELU, layer scale,
    residual; without stochastic depth. The same layers and names as Keras's ConvNeXt blocks."""
    inputs = x
    x = layers.Conv2D(projection_dim, kernel_size=7, padding="same", groups=projection_dim, name=f"{name}_depthwise_conv")(x)
    x = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_layernorm")(x)
    x = layers.Dense(4 * projection_dim, name=f"{name}_pointwise_conv_1")(x)
    x = layers.Activation("gelu", name=f"{name}_gelu")(x)
    x = layers.Dense(projection_dim, name=f"{name}_pointwise_conv_2")(x)
    x = LayerScale(1e-6, projection_dim, name=f"{name}_layer_scale")(x)
    return inputs + layers.Activation("linear", name=f"{name}_identity")(x)


def _convnext_atto(
    include_top: bool = False,
    include_preprocessing: bool = False,
    weights: str | None = None,
    input_shape: Sequence[int] = (224, 224, 3),
    pooling: str | None = "avg",
) -> keras.Model:
    """ConvNeXt-Atto (depths 2-2-6-2, widths 40-80-160-320, the timm configuration; ~3.4 M parameters):
    Keras's ConvNeXt architecture (input normalisation, stem, downsampling, blocks, final LayerNorm) at that
    size, built from public layers with the layer names of ``keras.applications.ConvNeXtTiny``. Takes the
    keras.applications arguments the backbones here use; no ImageNet weights exist for it in Keras, so
    ``weights`` must be None (a local weights file is loaded by :func:`build_backbone`)."""
    if include_top or weights is not None or pooling != "avg":
        raise ValueError("convnext_atto is built headless, average-pooled, from random weights")
    name, depths, widths = "convnext_atto", (2, 2, 6, 2), (40, 80, 160, 320)
    inputs = keras.Input(tuple(input_shape))
    x = inputs
    if include_preprocessing:  # Keras's ConvNeXt "PreStem": 0..255 RGB -> ImageNet mean/std units
        x = layers.Normalization(mean=_IMAGENET_MEAN_255, variance=_IMAGENET_VAR_255, name=f"{name}_prestem_normalization")(x)
    downsampling = [
        keras.Sequential(
            [
                layers.Conv2D(widths[0], kernel_size=4, strides=4, name=f"{name}_stem_conv"),
                layers.LayerNormalization(epsilon=1e-6, name=f"{name}_stem_layernorm"),
            ],
            name=f"{name}_stem",
        )
    ]
    for index in range(3):
        downsampling.append(
            keras.Sequential(
                [
                    layers.LayerNormalization(epsilon=1e-6, name=f"{name}_downsampling_layernorm_{index}"),
                    layers.Conv2D(widths[index + 1], kernel_size=2, strides=2, name=f"{name}_downsampling_conv_{index}"),
                ],
                name=f"{name}_downsampling_block_{index}",
            )
        )
    for stage, (depth, width) in enumerate(zip(depths, widths)):
        x = downsampling[stage](x)
        for block in range(depth):
            x = _convnext_block(x, width, f"{name}_stage_{stage}_block_{block}")
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.LayerNormalization(epsilon=1e-6)(x)
    return keras.Model(inputs, x, name=name)


BACKBONES: dict[str, BackboneSpec] = {
    "efficientnetv2b0": BackboneSpec(keras.applications.EfficientNetV2B0, "efficientnetv2"),
    "efficientnetv2b1": BackboneSpec(keras.applications.EfficientNetV2B1, "efficientnetv2"),
    "efficientnetv2b2": BackboneSpec(keras.applications.EfficientNetV2B2, "efficientnetv2"),
    "efficientnetv2b3": BackboneSpec(keras.applications.EfficientNetV2B3, "efficientnetv2"),
    "efficientnetv2s": BackboneSpec(keras.applications.EfficientNetV2S, "efficientnetv2"),
    "efficientnetv2m": BackboneSpec(keras.applications.EfficientNetV2M, "efficientnetv2"),
    "efficientnetv2l": BackboneSpec(keras.applications.EfficientNetV2L, "efficientnetv2"),
    "convnext_atto": BackboneSpec(_convnext_atto, "convnext"),
    "convnext_tiny": BackboneSpec(keras.applications.ConvNeXtTiny, "convnext"),
    "convnext_small": BackboneSpec(keras.applications.ConvNeXtSmall, "convnext"),
    "convnext_base": BackboneSpec(keras.applications.ConvNeXtBase, "convnext"),
    "convnext_large": BackboneSpec(keras.applications.ConvNeXtLarge, "convnext"),
}


def backbone_names(family: str | None = None) -> list[str]:
    """Registered backbone names, optionally of one family."""
    return [name for name, spec in BACKBONES.items() if family is None or spec.family == family]


def check_backbone(name: str, family: str) -> str:
    """``name`` when it is a backbone of ``family`` (``efficientnetv2`` or ``convnext``), else a ValueError naming the
    ``model`` param and listing the choices."""
    choices = backbone_names(family)
    if name not in choices:
        key = "efficientnet" if family == "efficientnetv2" else "convnext"
        raise ValueError(f"`model.{key}` must be one of {', '.join(choices)}. Received: {name!r}")
    return name


def _spec(name: str, family: str | None = None) -> BackboneSpec:
    choices = backbone_names(family)
    if name not in choices:
        what = f"a {family} backbone" if family else "a backbone"
        raise ValueError(f"Expected {what}, one of {', '.join(choices)}. Received: {name!r}")
    return BACKBONES[name]


def resolve_weights(weights: str | None, backbone: str) -> str | None:
    """Map ``model.weights`` to what a builder takes: None, ``"imagenet"`` or a local file.

    ``model.weights`` is ``null`` (random init), ``imagenet`` (Keras downloads them; needs internet)
    or a local folder holding ``<backbone>.weights.h5`` or Keras's ``<backbone>_notop.h5`` files.
    """
    if weights is None or weights == "imagenet":
        if weights == "imagenet" and backbone == "convnext_atto":
            raise ValueError(
                "Keras has no ImageNet weights for convnext_atto. Use `model.weights: null`, a folder with "
                "convnext_atto.weights.h5, or `model.convnext: convnext_tiny`."
            )
        return weights
    folder = Path(weights)
    for candidate in (folder / f"{backbone}.weights.h5", folder / f"{backbone}_notop.h5"):
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"`model.weights` is {weights!r}, but it holds neither {backbone}.weights.h5 nor {backbone}_notop.h5. "
        "Use null, imagenet, or a folder of weight files named by backbone."
    )


def build_backbone(name: str, input_shape: Sequence[int], weights: str | None = None) -> keras.Model:
    """A headless backbone with global average pooling: images in ``[0, 1]`` -> feature vector.

    The input is scaled back to 0..255 and handed to Keras's own preprocessing of that backbone
    (``include_preprocessing=True``), so every backbone sees the input its ImageNet weights were trained
    on: mean/std-normalised for EfficientNetV2-B0..B3 and ConvNeXt, ``[-1, 1]`` for EfficientNetV2-S/M/L.

    Args:
        name: a key of :data:`BACKBONES`.
        input_shape: ``(H, W, 3)``.
        weights: None, ``"imagenet"`` or a path to a weights file of this backbone.
    """
    spec = _spec(name)
    local = weights not in (None, "imagenet")
    core = spec.builder(
        include_top=False,
        include_preprocessing=True,
        weights=None if local else weights,
        input_shape=tuple(input_shape),
        pooling="avg",
    )
    if local:
        core.load_weights(weights)
    inputs = keras.Input(tuple(input_shape), name=f"{name}_image")
    pixels = layers.Rescaling(255.0, name=f"{name}_to_pixels")(inputs)  # [0, 1] -> 0..255, what Keras's preprocessing takes
    return keras.Model(inputs, core(pixels), name=name)


@keras.saving.register_keras_serializable(package="ich")
class AttentionFusion(layers.Layer):
    """Fuse feature vectors by learned, per-image attention weights.

    Each input ``f_i`` (any width) is projected to ``units`` (``p_i = LayerNorm(W_i f_i)``); a shared
    scorer gives ``s_i = v^T tanh(U p_i)``; ``alpha = softmax_i(s_i)`` and the output is
    ``sum_i alpha_i p_i``. So the model learns, image by image, how much to trust each backbone.
    """

    def __init__(self, units: int = 256, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) < 2:
            raise ValueError(f"AttentionFusion needs a list of at least two inputs. Received: {input_shape}")
        self.projections = [layers.Dense(self.units, name=f"project_{i}") for i in range(len(input_shape))]
        self.norms = [layers.LayerNormalization(name=f"norm_{i}") for i in range(len(input_shape))]
        for projection, norm, shape in zip(self.projections, self.norms, input_shape):
            projection.build(shape)
            norm.build((*shape[:-1], self.units))
        self.score_hidden = layers.Dense(self.units // 2, activation="tanh", name="score_hidden")
        self.score_hidden.build((None, self.units))
        self.score = layers.Dense(1, use_bias=False, name="score")
        self.score.build((None, self.units // 2))
        super().build(input_shape)

    def call(self, inputs, return_attention: bool = False):
        projected = [norm(projection(x)) for projection, norm, x in zip(self.projections, self.norms, inputs)]
        stacked = keras.ops.stack(projected, axis=1)  # (batch, n, units)
        scores = self.score(self.score_hidden(stacked))  # (batch, n, 1)
        attention = keras.ops.softmax(scores, axis=1)
        fused = keras.ops.sum(attention * stacked, axis=1)
        if return_attention:
            return fused, keras.ops.squeeze(attention, axis=-1)
        return fused

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _online_augmentation(image, enabled: bool):
    """Random horizontal flips and shifts of up to 6 % while training (no-ops at inference), so the
    model sees a new variant of every image each epoch; zero fill is air in all three windows."""
    if not enabled:
        return image
    image = layers.RandomFlip("horizontal", name="random_flip")(image)
    return layers.RandomTranslation(0.06, 0.06, fill_mode="constant", fill_value=0.0, name="random_shift")(image)


def _head(features, num_outputs: int, dropout: float, name: str):
    features = layers.Dropout(dropout, name=f"{name}_dropout")(features)
    return layers.Dense(num_outputs, activation="sigmoid", dtype="float32", name=name)(features)


def build_single(
    backbone: str,
    input_shape: Sequence[int],
    num_outputs: int,
    weights: str | None,
    dropout: float,
    name: str,
    augment: bool = False,
) -> keras.Model:
    """One backbone -> dropout -> ``num_outputs`` sigmoids (stage 1 of the cascade, or the 6-label models)."""
    image = keras.Input(tuple(input_shape), name="image")
    augmented = _online_augmentation(image, augment)
    features = build_backbone(backbone, input_shape, resolve_weights(weights, backbone))(augmented)
    return keras.Model(image, _head(features, num_outputs, dropout, HEAD_LAYER), name=name)


def build_any_classifier(
    backbone: str, input_shape: Sequence[int], weights: str | None, dropout: float, augment: bool = False
) -> keras.Model:
    """Cascade stage 1: EfficientNetV2 -> one sigmoid, P(any hemorrhage)."""
    _spec(backbone, "efficientnetv2")
    return build_single(backbone, input_shape, 1, weights, dropout, name="stage1_any", augment=augment)


def build_subtype_fusion(
    efficientnet: str,
    convnext: str,
    input_shape: Sequence[int],
    num_outputs: int,
    weights: str | None,
    dropout: float,
    fusion_units: int,
    augment: bool = False,
) -> keras.Model:
    """Cascade stage 2: EfficientNetV2 and ConvNeXt side by side, :class:`AttentionFusion`, sigmoids.

    Its outputs are P(subtype | hemorrhage): it is trained on hemorrhage-positive images only.
    """
    _spec(efficientnet, "efficientnetv2")
    _spec(convnext, "convnext")
    image = keras.Input(tuple(input_shape), name="image")
    augmented = _online_augmentation(image, augment)
    first = build_backbone(efficientnet, input_shape, resolve_weights(weights, efficientnet))(augmented)
    second = build_backbone(convnext, input_shape, resolve_weights(weights, convnext))(augmented)
    fused = AttentionFusion(fusion_units, name="fusion")([first, second])
    return keras.Model(image, _head(fused, num_outputs, dropout, HEAD_LAYER), name="stage2_subtypes")


def backbones_of(model: keras.Model) -> list[keras.Model]:
    """The backbone sub-models of a model built here (to freeze or unfreeze them)."""
    return [layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name in BACKBONES]
