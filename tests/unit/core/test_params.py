import subprocess
import sys

import pytest

from ich.core.params import (
    AugmentParams,
    DataParams,
    EvaluateParams,
    ModelParams,
    ParamsError,
    PreprocessParams,
    SampleParams,
    SplitParams,
    SynthesizeParams,
    TrainParams,
    context_slices,
    load_params,
    section,
)

SECTIONS = {
    "data": DataParams,
    "synthesize": SynthesizeParams,
    "sample": SampleParams,
    "preprocess": PreprocessParams,
    "split": SplitParams,
    "augment": AugmentParams,
    "model": ModelParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
}


@pytest.mark.parametrize("params_file", ["params.yaml", "params-rsna.yaml"])
def test_repository_params_load_into_every_section(params_file):
    params = load_params(params_file)
    loaded = {name: section(params, name, cls) for name, cls in SECTIONS.items()}
    assert loaded["sample"].per_label > 0
    assert [window.name for window in loaded["preprocess"].windows] == ["blood", "brain", "bone"]
    assert loaded["preprocess"].window_dicts()[0] == {"name": "blood", "center": 80.0, "width": 200.0}


def test_unknown_missing_and_mistyped_keys_name_the_key():
    with pytest.raises(ParamsError, match="unknown key `sample.per_lable`.*Expected keys: per_label, seed"):
        section({"sample": {"per_label": 3, "seed": 1, "per_lable": 2}}, "sample", SampleParams)
    with pytest.raises(ParamsError, match="missing key `sample.seed`"):
        section({"sample": {"per_label": 3}}, "sample", SampleParams)
    with pytest.raises(ParamsError, match="`sample.per_label`: Input should be a valid integer.*'many'"):
        section({"sample": {"per_label": "many", "seed": 1}}, "sample", SampleParams)
    with pytest.raises(ParamsError, match="`train.deterministic`: Input should be a valid boolean"):
        params = load_params("params.yaml")
        section({"train": {**params["train"], "deterministic": 1}}, "train", TrainParams)
    with pytest.raises(ParamsError, match="needs a `split:` section"):
        section({}, "split", SplitParams)
    # A key with a default in code must still be written in the file.
    with pytest.raises(ParamsError, match="missing key `synthesize.invalid_id_images`"):
        synthesize = dict(load_params("params.yaml")["synthesize"])
        del synthesize["invalid_id_images"]
        section({"synthesize": synthesize}, "synthesize", SynthesizeParams)


def test_value_checks_name_the_key_and_the_value():
    with pytest.raises(ParamsError, match="sum to 1"):
        section(
            {
                "split": {
                    "seed": 1,
                    "train_fraction": 0.9,
                    "val_fraction": 0.2,
                    "test_fraction": 0.1,
                    "max_val_series": None,
                    "max_test_series": None,
                }
            },
            "split",
            SplitParams,
        )
    windows = [{"name": "blood", "center": 80, "width": 200}] * 2 + [{"name": "bone", "center": 600, "width": 0}]
    preprocess = {**load_params("params.yaml")["preprocess"], "windows": windows}
    with pytest.raises(ParamsError, match=r"`preprocess.windows.2.width`: Input should be greater than 0. Received: 0"):
        section({"preprocess": preprocess}, "preprocess", PreprocessParams)
    with pytest.raises(ParamsError, match="exactly three windows"):
        section({"preprocess": {**preprocess, "windows": windows[:2]}}, "preprocess", PreprocessParams)
    evaluate = {"threshold": 1.5, "bootstrap_draws": -1, "seed": 0, "montage_images": 0}
    with pytest.raises(ParamsError, match="`evaluate.threshold`: Input should be less than 1.*`evaluate.bootstrap_draws`"):
        section({"evaluate": evaluate}, "evaluate", EvaluateParams)
    model = {**load_params("params.yaml")["model"], "combination": "sum"}
    with pytest.raises(ParamsError, match="`model.combination`: Input should be 'product' or 'gate'"):
        section({"model": model}, "model", ModelParams)


def test_params_are_schema_only_and_the_registries_check_names():
    """params.yaml's schema imports nothing of the models (no TensorFlow for the data stages); an unknown recipe or
    backbone is refused by the registry that knows the choices, listing them."""
    code = (
        "import sys; from ich.core.params import ModelParams, context_slices, load_params, section; "
        "p = load_params(); section(p, 'model', ModelParams); context_slices(p); "
        "from ich.models.recipes import recipe_names; assert 'cascade' in recipe_names(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras') or m.startswith('ich.models.recipes.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from ich.models.networks import check_backbone
    from ich.models.recipes import RecipeError, get_recipe

    with pytest.raises(
        RecipeError, match=r"`model.arch` must be one of cascade, cascade_warmstart, efficientnetv2, convnext. Received: 'effnet'"
    ):
        get_recipe("effnet")
    with pytest.raises(ValueError, match="`model.convnext` must be one of convnext_atto, convnext_tiny"):
        check_backbone("convnext_huge", "convnext")
    assert check_backbone("convnext_atto", "convnext") == "convnext_atto"
    with pytest.raises(ParamsError, match="`model.context_slices` must be an integer from 0 to 8. Received: 9"):
        context_slices({"model": {"context_slices": 9}})


def _preprocess(**changes):
    values = {**load_params("params.yaml")["preprocess"], **changes}
    return section({"preprocess": values}, "preprocess", PreprocessParams)


def test_preprocess_rsna_fix_and_file_timeout():
    assert _preprocess().rsna_pixel_fix == "auto" and _preprocess().file_timeout_s == 60.0
    assert _preprocess(rsna_pixel_fix="off").rsna_pixel_fix == "off"
    with pytest.raises(ParamsError, match=r"`preprocess.rsna_pixel_fix`: Input should be 'auto' or 'off'. Received: 'always'"):
        _preprocess(rsna_pixel_fix="always")
    with pytest.raises(ParamsError, match=r"`preprocess.file_timeout_s`: Input should be greater than 0"):
        _preprocess(file_timeout_s=0)
    with pytest.raises(ParamsError, match="`preprocess.file_timeout_s`: Input should be a valid number"):
        _preprocess(file_timeout_s="1 min")
