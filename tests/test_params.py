import pytest

from ich.params import ParamsError, PreprocessParams, SampleParams, SplitParams, load_params, section


def test_repository_params_load_into_every_section():
    params = load_params("params.yaml")
    assert section(params, "sample", SampleParams).per_label > 0
    assert section(params, "preprocess", PreprocessParams).image_size > 0
    assert section(params, "split", SplitParams).train_fraction == 0.8


def test_unknown_missing_and_mistyped_keys_name_the_key():
    with pytest.raises(ParamsError, match="Unknown key.*per_lable"):
        section({"sample": {"per_label": 3, "seed": 1, "per_lable": 2}}, "sample", SampleParams)
    with pytest.raises(ParamsError, match="sample.seed"):
        section({"sample": {"per_label": 3}}, "sample", SampleParams)
    with pytest.raises(ParamsError, match="sample.per_label.*int"):
        section({"sample": {"per_label": "many", "seed": 1}}, "sample", SampleParams)
    with pytest.raises(ParamsError, match="needs a `split:` section"):
        section({}, "split", SplitParams)


def test_value_checks():
    with pytest.raises(ParamsError, match="sum to 1"):
        section({"split": {"seed": 1, "train_fraction": 0.9, "val_fraction": 0.2, "test_fraction": 0.1}}, "split", SplitParams)


def _preprocess(**changes):
    values = {
        "image_size": 64, "windows": [], "max_quarantine_fraction": 0.05, "workers": 0, "pseudonymize_ids": False,
        "rsna_pixel_fix": "auto", "file_timeout_s": 60, **changes,
    }
    return section({"preprocess": values}, "preprocess", PreprocessParams)


def test_preprocess_rsna_fix_and_file_timeout():
    assert _preprocess().rsna_pixel_fix == "auto" and _preprocess().file_timeout_s == 60.0
    assert _preprocess(rsna_pixel_fix="off").rsna_pixel_fix == "off"
    with pytest.raises(ParamsError, match=r"rsna_pixel_fix` must be one of auto, off. Received: 'always'"):
        _preprocess(rsna_pixel_fix="always")
    with pytest.raises(ParamsError, match="file_timeout_s` must be > 0"):
        _preprocess(file_timeout_s=0)
    with pytest.raises(ParamsError, match="file_timeout_s.*float"):
        _preprocess(file_timeout_s="1 min")


def test_rsna_params_file_has_the_same_preprocess_keys():
    assert section(load_params("params-rsna.yaml"), "preprocess", PreprocessParams).rsna_pixel_fix == "auto"
