"""Grad-CAM (ich.inference.explain), the synthesizer's lesion masks (ich.data.synth) and the pointing game's scoring.

Expected maps are computed here without ich.inference.explain: analytically (global average pooling then a dense head
makes ``alpha_k = W[k, unit] / (h * w)``) or with a GradientTape over a forward pass written out by hand.
"""

from __future__ import annotations

import hashlib

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from benchmarks.pointing_game import chance_of_hit, dilate, energy_inside, is_hit, pointing_location
from ich.core.labels import LABELS, SUBTYPES
from ich.core.params import ModelParams, SynthesizeParams, section
from ich.data.labels_csv import parse_long_csv
from ich.data.synth import generate, lesion_masks, mask_to_image
from ich.imaging.dicom import CtSlice, read_ct_slice, to_hounsfield
from ich.imaging.rendering import render_rgb
from ich.inference.explain import gradcam, gradcam_network, overlay
from ich.inference.loading import LoadedModel
from ich.models.card import ModelCard
from ich.models.recipes import CamTarget, RecipeError, get_recipe

SIZE = 32
MODEL = {
    "arch": "cascade",
    "efficientnet": "efficientnetv2b0",
    "convnext": "convnext_atto",
    "weights": None,
    "dropout": 0.1,
    "fusion_units": 16,
    "online_augmentation": True,
    "combination": "product",
    "gate_threshold": 0.5,
    "context_slices": 0,
}


def _bilinear(cam: np.ndarray, size: int) -> np.ndarray:
    """OpenCV's bilinear resize (half-pixel centres, edges clamped), one (h, w) map at a time."""
    return np.stack([cv2.resize(np.asarray(one, np.float32), (size, size), interpolation=cv2.INTER_LINEAR) for one in cam])


def _finish(summed: np.ndarray) -> np.ndarray:
    """ReLU, then each map divided by its own maximum (zero stays zero)."""
    positive = np.maximum(summed, 0.0)
    peak = positive.max(axis=(1, 2), keepdims=True)
    return np.divide(positive, peak, out=np.zeros_like(positive), where=peak > 0)


def _tiny_backbone(name: str, channels: int, layernorm: bool) -> keras.Model:
    """A backbone named as a registered one: two convolutions (8 x 8 map at 32 px), global average pooling, and
    (like ConvNeXt) a LayerNorm after it."""
    image = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu")(image)
    x = keras.layers.Conv2D(channels, 3, strides=2, padding="same", activation="relu", name=f"{name}_last")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if layernorm:
        x = keras.layers.LayerNormalization()(x)
    return keras.Model(image, x, name=name)


def _with_head(backbones: list[keras.Model], units: int, seed: int = 0) -> keras.Model:
    """image -> online augmentation -> backbone(s) (concatenated) -> dropout -> sigmoid head ``probabilities``."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.RandomFlip("horizontal")(image)
    x = keras.layers.RandomTranslation(0.2, 0.2)(x)
    features = [backbone(x) for backbone in backbones]
    x = features[0] if len(features) == 1 else keras.layers.Concatenate()(features)
    x = keras.layers.Dropout(0.5)(x)
    return keras.Model(image, keras.layers.Dense(units, activation="sigmoid", name="probabilities")(x))


def _images(count: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, SIZE, SIZE, 3), dtype=np.float32)


def test_gradcam_equals_the_analytic_map_of_a_pooled_linear_head():
    backbone = _tiny_backbone("efficientnetv2b0", 5, layernorm=False)
    network = _with_head([backbone], units=3)
    images = _images()
    features = keras.Model(backbone.inputs, backbone.get_layer("efficientnetv2b0_last").output)(images).numpy()  # (4, 8, 8, 5)
    kernel = network.get_layer("probabilities").kernel.numpy()
    for unit in range(3):
        alpha = kernel[:, unit] / (8 * 8)  # d logit / d A_ij^k of GAP -> Dense
        expected = _finish(_bilinear((features * alpha).sum(axis=-1), SIZE))
        got = gradcam_network(network, images, unit, ("efficientnetv2",), batch_size=3)
        assert got.shape == (4, SIZE, SIZE) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=2e-5)
    backbone.trainable = False  # a frozen backbone (a head-only training phase) explains the same
    np.testing.assert_allclose(gradcam_network(network, images, 2, ("efficientnetv2",)), expected, atol=2e-5)
    # uint8 input is read as x / 255
    pixels = np.random.default_rng(1).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        gradcam_network(network, pixels, 1, ("efficientnetv2",)),
        gradcam_network(network, pixels.astype(np.float32) / 255.0, 1, ("efficientnetv2",)),
        atol=1e-6,
    )


def test_gradcam_of_two_fused_backbones_matches_a_gradient_tape_and_sums_their_maps():
    first = _tiny_backbone("efficientnetv2b0", 4, layernorm=False)
    second = _tiny_backbone("convnext_atto", 3, layernorm=True)
    network = _with_head([first, second], units=2, seed=3)
    images = _images(seed=2)
    head = network.get_layer("probabilities")
    last = {model.name: keras.Model(model.inputs, model.get_layer(f"{model.name}_last").output) for model in (first, second)}
    maps_first, maps_second = last["efficientnetv2b0"](images), last["convnext_atto"](images)
    with tf.GradientTape() as tape:  # the rest of the forward pass, written out: pool, (LayerNorm), concatenate, head
        tape.watch([maps_first, maps_second])
        pooled_second = second.layers[-1](tf.reduce_mean(maps_second, axis=(1, 2)))
        fused = tf.concat([tf.reduce_mean(maps_first, axis=(1, 2)), pooled_second], axis=-1)
        logit = tf.matmul(fused, head.kernel)[:, 1] + head.bias[1]
    gradients = tape.gradient(logit, [maps_first, maps_second])
    cams = [
        _bilinear(tf.reduce_sum(tf.reduce_mean(g, axis=(1, 2), keepdims=True) * a, axis=-1).numpy(), SIZE)
        for a, g in zip([maps_first, maps_second], gradients)
    ]
    np.testing.assert_allclose(
        gradcam_network(network, images, 1, ("efficientnetv2", "convnext")), _finish(cams[0] + cams[1]), atol=2e-5
    )
    np.testing.assert_allclose(gradcam_network(network, images, 1, ("convnext",)), _finish(cams[1]), atol=2e-5)
    with pytest.raises(ValueError, match="Expected one convnext backbone.*found 0"):
        gradcam_network(_with_head([first], 2), images, 0, ("convnext",))
    with pytest.raises(ValueError, match="must index one of the 2 units"):
        gradcam_network(network, images, 2, ("convnext",))
    with pytest.raises(ValueError, match=r"must be \(N, 32, 32, 3\)"):
        gradcam_network(network, images[:, :16], 0, ("convnext",))


class _HalfMask(keras.layers.Layer):
    """Keeps channel 0 only on the left half, channel 1 only on the right half, channel 2 only on the top half."""

    def call(self, x):
        columns = tf.range(SIZE) < SIZE // 2
        rows = tf.range(SIZE) < SIZE // 2
        left = tf.cast(columns[None, None, :, None], x.dtype)
        top = tf.cast(rows[None, :, None, None], x.dtype)
        return tf.concat([x[..., :1] * left, x[..., 1:2] * (1 - left), x[..., 2:3] * top], axis=-1)


def _identity_backbone(name: str) -> keras.Model:
    """A backbone whose last map is the masked image itself (channels as :class:`_HalfMask` leaves them)."""
    image = keras.Input((SIZE, SIZE, 3))
    return keras.Model(image, keras.layers.GlobalAveragePooling2D()(_HalfMask()(image)), name=name)


def _unit_head(network: keras.Model, weights: np.ndarray) -> keras.Model:
    head = network.get_layer("probabilities")
    head.set_weights([weights.astype(np.float32), np.zeros(weights.shape[1], np.float32)])
    return network


def test_each_label_is_explained_on_its_network_and_unit():
    """Stage 2's epidural unit reads channel 0 (left half only), its subdural unit channel 1 (right half);
    stage 1 reads channel 2 (top half). A flat image: each map must light up exactly where its unit looks."""
    stage1 = _unit_head(_with_head([_identity_backbone("efficientnetv2b0")], 1), np.array([[0.0], [0.0], [1.0]]))
    stage2_weights = np.zeros((6, len(SUBTYPES)))  # efficientnet channels 0..2, then convnext 0..2 (all zero)
    stage2_weights[0, SUBTYPES.index("epidural")] = 1.0
    stage2_weights[1, SUBTYPES.index("subdural")] = 1.0
    stage2 = _unit_head(
        _with_head([_identity_backbone("efficientnetv2b0"), _identity_backbone("convnext_atto")], len(SUBTYPES)), stage2_weights
    )
    model = LoadedModel(
        card=ModelCard(
            arch="cascade", files={"stage1": "stage1.keras", "stage2": "stage2.keras"}, image_size=SIZE, windows=[], thresholds={}
        ),
        recipe=get_recipe("cascade"),
        networks={"stage1": stage1, "stage2": stage2},
    )
    flat = np.full((2, SIZE, SIZE, 3), 0.5, np.float32)
    half = SIZE // 2
    epidural, subdural, bleed = (gradcam(model, flat, label) for label in ("epidural", "subdural", "any"))
    assert (epidural[:, :, : half - 1] > 0.99).all() and (epidural[:, :, half + 1 :] < 0.01).all()
    assert (subdural[:, :, half + 1 :] > 0.99).all() and (subdural[:, :, : half - 1] < 0.01).all()
    assert (bleed[:, : half - 1] > 0.99).all() and (bleed[:, half + 1 :] < 0.01).all()
    # intraparenchymal's unit has zero weights: no evidence anywhere, an all-zero map (not NaN)
    assert np.array_equal(gradcam(model, flat, "intraparenchymal"), np.zeros((2, SIZE, SIZE), np.float32))
    with pytest.raises(RecipeError, match="must be one of any, epidural.*'bleed'"):
        gradcam(model, flat, "bleed")


def test_recipes_name_the_network_unit_and_backbones_of_each_label():
    cascade, single = get_recipe("cascade"), get_recipe("convnext")
    assert cascade.cam_target("any") == CamTarget("stage1", 0, ("efficientnetv2",))
    assert cascade.cam_target("subarachnoid") == CamTarget("stage2", 3, ("efficientnetv2", "convnext"))
    assert get_recipe("cascade_warmstart").cam_target("epidural") == CamTarget("stage2", 0, ("efficientnetv2", "convnext"))
    assert [single.cam_target(label) for label in LABELS] == [CamTarget("model", i, ("convnext",)) for i in range(6)]
    assert get_recipe("efficientnetv2").cam_target("subdural") == CamTarget("model", 5, ("efficientnetv2",))


@pytest.mark.parametrize("arch, network, family", [("cascade", "stage1", "efficientnetv2"), ("convnext", "model", "convnext")])
def test_gradcam_on_real_backbones_matches_an_independent_computation(arch, network, family):
    """EfficientNetV2-B0 and ConvNeXt-Atto as the recipes build them (online augmentation on, which must stay
    inactive), at 64 px (2 x 2 last maps): the map equals one computed from the backbone's own last layer."""
    keras.utils.set_random_seed(0)
    params = section({"model": {**MODEL, "arch": arch}}, "model", ModelParams)
    built = get_recipe(arch).build(network, params, (64, 64, 3))
    backbone = built.get_layer(params.efficientnet if family == "efficientnetv2" else params.convnext)
    core = backbone.layers[-1]
    images = np.random.default_rng(0).random((3, 64, 64, 3), dtype=np.float32)
    if family == "efficientnetv2":
        last_map = keras.Model(core.inputs, core.get_layer("top_activation").output)
    else:  # ConvNeXt's last block ends in a residual sum (no named layer): the map its pooling reads
        pooling = [layer for layer in core.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)]
        assert len(pooling) == 1
        last_map = keras.Model(core.inputs, pooling[0].input)
    maps = last_map(images * 255.0)
    assert maps.shape[1:3] == (2, 2)
    head = built.get_layer("probabilities")
    with tf.GradientTape() as tape:
        tape.watch(maps)
        pooled = tf.reduce_mean(maps, axis=(1, 2))
        if family == "convnext":
            pooled = core.layers[-1](pooled)  # its final LayerNorm
        logit = tf.matmul(pooled, head.kernel)[:, 0] + head.bias[0]
    gradient = tape.gradient(logit, maps)
    cam = tf.reduce_sum(tf.reduce_mean(gradient, axis=(1, 2), keepdims=True) * maps, axis=-1).numpy()
    np.testing.assert_allclose(gradcam_network(built, images, 0, (family,)), _finish(_bilinear(cam, 64)), atol=1e-4)
    # the pooled features the explanation weighs reproduce the network's own output
    np.testing.assert_allclose(tf.sigmoid(logit).numpy(), built(images, training=False).numpy()[:, 0], rtol=1e-5)


def test_overlay_blends_jet_colours_over_the_slice():
    image = np.zeros((4, 6, 3), np.uint8)
    image[..., 1] = 200
    heat = np.zeros((4, 6), np.float32)
    heat[:, 3:] = 1.0
    assert np.array_equal(overlay(image, heat, alpha=0.0), image)
    colours = overlay(image, heat, alpha=1.0)
    assert colours.dtype == np.uint8 and colours.shape == (4, 6, 3)
    assert (colours[:, :3] == (0, 0, 128)).all() and (colours[:, 3:] == (128, 0, 0)).all()  # JET: 0 dark blue, 1 dark red
    half = overlay(image.astype(np.float32) / 255.0, heat, alpha=0.5)  # float [0, 1] input, the same slice
    assert (half[:, :3] == (0, 100, 64)).all() and (half[:, 3:] == (64, 100, 0)).all()
    small = overlay(np.zeros((8, 8, 3), np.uint8), np.ones((2, 2), np.float32), alpha=1.0)  # the map is resized
    assert small.shape == (8, 8, 3) and (small == (128, 0, 0)).all()
    with pytest.raises(ValueError, match=r"must be \(H, W, 3\)"):
        overlay(heat, heat)
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, heat, alpha=1.5)


# -- lesion masks -------------------------------------------------------------------------------------------------

MASK_SET = dict(
    seed=7,
    patients=8,
    slices_per_series=6,
    image_size=48,
    hemorrhage_fraction=0.9,
    nonsquare_fraction=0.5,
    wrapped_fraction=0.3,
    duplicate_rows=4,
)
#: sha256 of that set's files (relative path + bytes, sorted), written by the code before the masks were added.
MASK_SET_DIGEST = "d797c18e6b01e248b8e4ac43bc2b5f8932f36946e737d10c79e42d21037464b1"


def _digest(folder) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    generate(SynthesizeParams(**MASK_SET), folder)
    return folder


def test_generated_files_are_byte_identical_to_the_code_before_lesion_masks(synthetic_set):
    assert _digest(synthetic_set) == MASK_SET_DIGEST


def test_lesion_masks_are_where_the_written_dicoms_hold_blood(synthetic_set):
    config = SynthesizeParams(**MASK_SET)
    masks = lesion_masks(config)
    labels = parse_long_csv(str(synthetic_set / "stage_2_train.csv")).wide.set_index("ID")
    assert set(masks) == set(labels.index)
    shapes, checked = set(), 0
    for path in sorted((synthetic_set / "stage_2_train").glob("*.dcm")):
        try:
            ct = read_ct_slice(path.read_bytes(), path.stem)
        except Exception:  # the planted corrupt file
            continue
        hu = to_hounsfield(ct.pixels, ct.slope, ct.intercept)
        slice_masks = masks[path.stem]
        shapes.add(slice_masks.brain.shape)
        assert slice_masks.brain.shape == hu.shape
        for label in LABELS:  # a label is 1 exactly where its mask has pixels
            assert bool(slice_masks.label(label).any()) == bool(labels.loc[path.stem, label]), (path.stem, label)
        blood = slice_masks.label("any")
        if blood.any():
            assert np.median(hu[blood]) > 55 and np.mean((hu[blood] > 40) & (hu[blood] < 110)) > 0.95
            checked += 1
        elsewhere = hu[slice_masks.brain & ~blood]  # parenchyma 28-38 HU, CSF 6-8 HU, noise sd 3
        assert np.mean(elsewhere > 52) < 0.001
        assert not (blood & ~slice_masks.brain).any()
    assert checked > 5 and shapes == {(48, 48), (48, 37)}  # both square and 256x197-shaped (here 48x37) series
    some = sorted(masks)[::7]
    subset = lesion_masks(config, some + ["ID_00000000f"])  # an ID the set lacks is left out
    assert sorted(subset) == some
    assert all(np.array_equal(subset[i].label("any"), masks[i].label("any")) for i in some)


def test_mask_to_image_follows_preprocess_padding_and_area_resize():
    """A slice that is bone exactly where a 256 x 197 mask is, air elsewhere, rendered as preprocess renders it:
    the image is non-black exactly where the resized mask is set (any lesion pixel in the footprint)."""
    rng = np.random.default_rng(0)
    mask = np.zeros((256, 197), bool)
    mask[100:140, 3:30] = True
    mask[rng.integers(0, 256, 40), rng.integers(0, 197, 40)] = True  # single pixels: 1/16 of an output pixel
    mask[:, -1] = True  # the last column, next to the padding
    stored = np.where(mask, 2024, 24).astype(np.int32)  # 1000 HU and -1000 HU at intercept -1024
    rendered = render_rgb(CtSlice(pixels=stored, slope=1.0, intercept=-1024.0, metadata={}), 64)
    resized = mask_to_image(mask, 64)
    assert resized.shape == (64, 64) and resized.dtype == bool
    assert np.array_equal(rendered.max(axis=-1) > 0, resized)
    square = np.zeros((64, 64), bool)
    square[10:20, 30:33] = True
    assert np.array_equal(mask_to_image(square, 64), square)
    majority = mask_to_image(np.kron(square, np.ones((4, 4), bool)) | np.eye(256, dtype=bool), 64, min_coverage=0.5)
    assert np.array_equal(majority, square)  # the diagonal covers 4 of 16 pixels: not a majority


# -- the pointing game's scoring ------------------------------------------------------------------------------------


def test_pointing_game_hits_by_hand():
    heat = np.zeros((10, 10), np.float32)
    heat[2, 3] = 1.0
    lesion = np.zeros((10, 10), bool)
    lesion[2, 5] = True  # 2 px right of the maximum
    assert pointing_location(heat) == (2, 3)
    assert not is_hit(heat, lesion, 1) and is_hit(heat, lesion, 2)
    diagonal = np.zeros((10, 10), bool)
    diagonal[4, 5] = True  # sqrt(8) = 2.83 px away
    assert not is_hit(heat, diagonal, 2) and is_hit(heat, diagonal, 3)
    assert is_hit(heat, heat > 0, 0)
    # a flat 4 x 4 block of maxima points at its pixel nearest the block's centre, not its first corner
    plateau = np.zeros((10, 10), np.float32)
    plateau[0:4, 0:4] = 1.0
    assert pointing_location(plateau) == (1, 1)
    # dilation is a Euclidean disk: radius 1 adds the 4 neighbours, radius 2 the 12 of a 5 x 5 disk
    assert dilate(lesion, 1).sum() == 5 and dilate(lesion, 2).sum() == 13


def test_chance_baseline_is_the_share_of_brain_near_the_lesion():
    brain = np.zeros((10, 10), bool)
    brain[:, :5] = True  # 50 pixels
    lesion = np.zeros((10, 10), bool)
    lesion[5, 4] = True  # dilated by 1: (5,4) (4,4) (6,4) (5,3) inside the brain, (5,5) outside
    assert chance_of_hit(lesion, brain, 1) == pytest.approx(4 / 50)
    assert chance_of_hit(lesion, brain, 0) == pytest.approx(1 / 50)
    with pytest.raises(ValueError, match="brain mask is empty"):
        chance_of_hit(lesion, np.zeros_like(brain), 1)


def test_energy_is_the_share_of_heat_in_the_brain_near_the_lesion():
    brain = np.zeros((10, 10), bool)
    brain[:, :5] = True
    lesion = np.zeros((10, 10), bool)
    lesion[5, 4] = True
    heat = np.zeros((10, 10), np.float32)
    heat[5, 3], heat[0, 0], heat[0, 9] = 0.6, 0.2, 5.0  # (0, 9) is outside the brain: not counted
    assert energy_inside(heat, lesion, brain, 1) == pytest.approx(0.6 / 0.8)
    assert energy_inside(heat, lesion, brain, 0) == 0.0
    assert energy_inside(np.ones((10, 10)), lesion, brain, 1) == pytest.approx(chance_of_hit(lesion, brain, 1))
    assert energy_inside(np.zeros((10, 10)), lesion, brain, 1) is None


def test_the_default_level_reads_the_last_map_at_least_eight_pixels_wide():
    from ich.inference.explain import auto_level

    # stride 32: 256 px -> 8 x 8 (the last block), 128 px -> 4 x 4 (one block earlier, 8 x 8), 64 px -> 2 x 2 (two)
    assert [auto_level(size) for size in (512, 256, 128, 64)] == [0, 0, 1, 2]
    assert auto_level(32) == 3 and auto_level(16) == 3  # never wider than the image: 16 px -> level 3 (a 16 x 16 map)
