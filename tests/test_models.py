import numpy as np
import pytest

import keras

from ich.models import (  # noqa: E402
    BACKBONES,
    AttentionFusion,
    build_any_classifier,
    build_backbone,
    build_single,
    build_subtype_fusion,
    resolve_weights,
)

SHAPE = (32, 32, 3)
LARGE = {"efficientnetv2m", "efficientnetv2l", "convnext_base", "convnext_large"}


@pytest.mark.parametrize(
    "name",
    [pytest.param(name, marks=pytest.mark.slow) if name in LARGE else name for name in BACKBONES],
)
def test_every_backbone_gives_finite_features(name):
    backbone = build_backbone(name, SHAPE, weights=None)
    features = backbone(np.random.default_rng(0).random((2, *SHAPE), dtype=np.float32))
    assert features.shape[0] == 2 and len(features.shape) == 2
    assert np.isfinite(np.asarray(features)).all()


@pytest.mark.parametrize("arch", ["cascade", "efficientnetv2", "convnext"])
def test_every_arch_gives_probabilities_of_the_right_shape(arch):
    images = np.random.default_rng(1).random((3, *SHAPE), dtype=np.float32)
    if arch == "cascade":
        outputs = [
            build_any_classifier("efficientnetv2b0", SHAPE, None, 0.1)(images),
            build_subtype_fusion("efficientnetv2b0", "convnext_atto", SHAPE, 5, None, 0.1, 16)(images),
        ]
        shapes = [(3, 1), (3, 5)]
    else:
        backbone = "efficientnetv2b0" if arch == "efficientnetv2" else "convnext_atto"
        outputs = [build_single(backbone, SHAPE, 6, None, 0.1, arch)(images)]
        shapes = [(3, 6)]
    for output, shape in zip(outputs, shapes):
        values = np.asarray(output)
        assert values.shape == shape
        assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()


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
