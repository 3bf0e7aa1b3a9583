import keras
import numpy as np
import pytest

from ich.models.networks import (
    BACKBONES,
    AttentionFusion,
    build_backbone,
    build_single,
    build_subtype_fusion,
    resolve_weights,
)

SHAPE = (32, 32, 3)
LARGE = {"efficientnetv2m", "efficientnetv2l", "convnext_base", "convnext_large"}


def _keras_reference(name: str) -> keras.Model:
    """Keras's own model of a backbone, with its own preprocessing on 0..255 RGB (random weights)."""
    if name == "convnext_atto":  # not in keras.applications: Keras's ConvNeXt builder at the Atto size
        from keras.src.applications.convnext import ConvNeXt

        return ConvNeXt(
            depths=[2, 2, 6, 2],
            projection_dims=[40, 80, 160, 320],
            name="convnext_atto_reference",
            include_top=False,
            include_preprocessing=True,
            weights=None,
            input_shape=SHAPE,
            pooling="avg",
        )
    return BACKBONES[name].builder(include_top=False, include_preprocessing=True, weights=None, input_shape=SHAPE, pooling="avg")


@pytest.mark.parametrize(
    "name",
    [pytest.param(name, marks=pytest.mark.slow) if name in LARGE else name for name in BACKBONES],
)
def test_every_backbone_sees_the_input_of_kerass_own_preprocessing(name):
    """Our backbone on ``[0, 1]`` images equals Keras's reference model, same weights, on the 0..255 images:
    mean/std normalisation for EfficientNetV2-B0..B3 and ConvNeXt, [-1, 1] for EfficientNetV2-S/M/L."""
    backbone = build_backbone(name, SHAPE, weights=None)
    reference = _keras_reference(name)
    core = next(layer for layer in backbone.layers if isinstance(layer, keras.Model))
    reference.set_weights(core.get_weights())
    pixels = np.random.default_rng(0).integers(0, 256, (2, *SHAPE)).astype(np.float32)
    features = np.asarray(backbone(pixels / 255.0, training=False))
    expected = np.asarray(reference(pixels, training=False))
    assert features.shape == expected.shape and features.shape[0] == 2 and np.isfinite(features).all()
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)


def test_online_augmentation_changes_training_inputs_only():
    model = build_single("efficientnetv2b0", SHAPE, 1, None, 0.0, "m", augment=True)
    assert {"random_flip", "random_shift"} <= {layer.name for layer in model.layers}
    images = np.random.default_rng(3).random((2, *SHAPE), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(model(images, training=False)), np.asarray(model(images, training=False)))
    shift = model.get_layer("random_shift")
    batch = np.random.default_rng(4).random((8, *SHAPE), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(shift(batch, training=False)), batch)
    assert not np.allclose(np.asarray(shift(batch, training=True)), batch)


def test_attention_fusion_is_a_convex_combination_of_projections():
    layer = AttentionFusion(units=8)
    a = np.random.default_rng(0).random((4, 5), dtype=np.float32)
    b = np.random.default_rng(1).random((4, 3), dtype=np.float32)
    fused, attention = layer([a, b], return_attention=True)
    attention = np.asarray(attention)
    assert attention.shape == (4, 2)
    np.testing.assert_allclose(attention.sum(axis=1), 1.0, rtol=1e-5)
    projected = [np.asarray(norm(projection(x))) for projection, norm, x in zip(layer.projections, layer.norms, [a, b])]
    expected = attention[:, :1] * projected[0] + attention[:, 1:] * projected[1]
    np.testing.assert_allclose(np.asarray(fused), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at least two inputs"):
        AttentionFusion(4)([a])


def test_fusion_model_round_trips_in_safe_mode(tmp_path):
    model = build_subtype_fusion("efficientnetv2b0", "convnext_atto", SHAPE, 5, None, 0.1, 16)
    path = tmp_path / "stage2.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    images = np.random.default_rng(2).random((2, *SHAPE), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(loaded(images)), np.asarray(model(images)), rtol=1e-5, atol=1e-6)


def test_weights_from_a_local_folder(tmp_path):
    source = build_backbone("convnext_atto", SHAPE, weights=None)
    core = source.get_layer("convnext_atto")
    core.save_weights(tmp_path / "convnext_atto.weights.h5")
    path = resolve_weights(str(tmp_path), "convnext_atto")
    loaded = build_backbone("convnext_atto", SHAPE, weights=path)
    for mine, theirs in zip(loaded.get_layer("convnext_atto").get_weights(), core.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    with pytest.raises(FileNotFoundError, match="efficientnetv2b0"):
        resolve_weights(str(tmp_path), "efficientnetv2b0")
    with pytest.raises(ValueError, match="no ImageNet weights for convnext_atto"):
        resolve_weights("imagenet", "convnext_atto")


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(ValueError, match="efficientnetv2b0.*Received: 'effnet'"):
        build_backbone("effnet", SHAPE)
    with pytest.raises(ValueError, match="convnext backbone"):
        build_subtype_fusion("efficientnetv2b0", "efficientnetv2b1", SHAPE, 5, None, 0.1, 8)
