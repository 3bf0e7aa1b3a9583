import hashlib

import numpy as np
import pandas as pd

from ich.core.labels import RSNA_ROW_ORDER, SUBTYPES
from ich.core.params import SynthesizeParams
from ich.data.labels_csv import parse_long_csv
from ich.data.synth import generate
from ich.imaging.dicom import read_ct_slice, to_hounsfield

TINY = dict(patients=6, slices_per_series=8, image_size=64, duplicate_rows=4, hemorrhage_fraction=0.9)


def _digest(folder):
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def test_deterministic_by_seed(tmp_path):
    generate(SynthesizeParams(seed=1, **TINY), tmp_path / "a")
    generate(SynthesizeParams(seed=1, **TINY), tmp_path / "b")
    generate(SynthesizeParams(seed=2, **TINY), tmp_path / "c")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


def test_rsna_layout_labels_and_quirks(tmp_path):
    counts = generate(SynthesizeParams(seed=3, wrapped_fraction=0.5, **TINY), tmp_path)
    csv = pd.read_csv(tmp_path / "stage_2_train.csv", dtype=str)
    assert list(csv.columns) == ["ID", "Label"]
    first_image = csv["ID"].iloc[:6].str.rpartition("_")
    assert first_image[2].tolist() == list(RSNA_ROW_ORDER)
    assert first_image[0].nunique() == 1
    parsed = parse_long_csv(str(tmp_path / "stage_2_train.csv"))
    assert parsed.counts["rows_exact_duplicates"] == 4
    assert parsed.counts["rows_malformed"] == 6  # the planted ID_../../ image
    wide = parsed.wide
    assert len(wide) == counts["images"]
    assert (wide["any"] == wide[list(SUBTYPES)].max(axis=1)).all()
    assert wide["any"].sum() > 0
    files = sorted((tmp_path / "stage_2_train").glob("*.dcm"))
    assert len(files) == counts["images"] - 1  # one planted missing file
    wrapped = 0
    for path in files:
        try:
            ct = read_ct_slice(path.read_bytes(), path.stem)
        except Exception as error:  # the planted corrupt file
            assert "truncated" in str(error)
            continue
        hu = to_hounsfield(ct.pixels, ct.slope, ct.intercept)
        assert hu.min() < -900 and hu.max() > 1000  # air and skull, also for the wrapped 12-bit files
        wrapped += ct.intercept == -1000.0
    assert wrapped > 0


def test_hemorrhage_is_acute_blood_density(tmp_path):
    from ich.data.phantom import Lesion, render_slice

    rng = np.random.default_rng(0)
    texture = np.zeros((64, 64), dtype=np.float32)
    lesion = Lesion("intraparenchymal", z_center=2, z_half=2, angle=0, size=0.2, offset=(0.3, 0.0), hu=70)
    hu, counts = render_slice(64, 64, 0.5, 2, [lesion], (32, 32, 22, 27), texture, rng)
    assert counts["intraparenchymal"] > 10
    _, none = render_slice(64, 64, 0.5, 5, [lesion], (32, 32, 22, 27), texture, rng)
    assert none == {}
    assert 50 < np.median(hu[32, 38:42]) < 90
