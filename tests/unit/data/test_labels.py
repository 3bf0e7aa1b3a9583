import pandas as pd
import pytest

from ich.core.ids import is_valid_id, validate_id
from ich.core.labels import LABELS
from ich.data.labels_csv import LabelsCsvError, parse_long_csv
from ich.data.sample import sample_balanced
from tests.helpers import write_long_csv


@pytest.mark.parametrize("good", ["ID_12cadc6af", "ID_0", "ID_abcdef0123"])
def test_valid_ids(good):
    assert is_valid_id(good)
    assert validate_id(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "ID_../../etc/passwd",
        "/etc/passwd",
        "ID_12\x00ab",
        "ID_ABC",
        "ID_12cadc6aé",
        "ID_",
        "id_12",
        "ID_1/2",
        "ID_" + "a" * 100,
        "",
        None,
        12,
    ],
)
def test_invalid_ids_are_rejected(bad):
    assert not is_valid_id(bad)
    with pytest.raises(ValueError, match="ID_"):
        validate_id(bad)


def test_parse_pivots_to_wide_table(tmp_path):
    path = write_long_csv(
        tmp_path / "labels.csv",
        {"ID_b": {"subdural": 1, "any": 1}, "ID_a": {}},
    )
    parsed = parse_long_csv(str(path))
    assert list(parsed.wide.columns) == ["ID", *LABELS]
    assert parsed.wide["ID"].tolist() == ["ID_a", "ID_b"]
    assert parsed.wide.set_index("ID").loc["ID_b"].tolist() == [1, 0, 0, 0, 0, 1]
    assert parsed.rejected.empty
    assert parsed.counts["images_valid"] == 2


def test_parse_reports_bad_rows_and_keeps_good_ones(tmp_path):
    path = write_long_csv(
        tmp_path / "labels.csv",
        {"ID_a": {"epidural": 1, "any": 1}, "ID_b": {}, "ID_c": {"subdural": 1}, "ID_d": {}},
        extra_lines=[
            "ID_a_epidural,1",  # exact duplicate: dropped, counted
            "ID_b_subdural,1",  # conflicting duplicate: ID_b rejected
            "ID_../../x_any,0",  # path trick
            "ID_e_any,2",  # not 0/1
            "ID_e_headache,0",  # unknown label
            "ID_f_any,0",  # incomplete image
            "",
        ],
    )
    parsed = parse_long_csv(str(path))
    assert parsed.wide["ID"].tolist() == ["ID_a", "ID_d"]
    reasons = dict(zip(parsed.rejected["ID"], parsed.rejected["reason"]))
    assert "conflicting" in reasons["ID_b"]
    assert "does not match" in reasons["ID_../../x_any"]
    assert "not 0 or 1" in reasons["ID_e_any"]
    assert "unknown label" in reasons["ID_e_headache"]
    assert "missing label rows" in reasons["ID_f"]
    assert "'any' disagrees" in reasons["ID_c"]
    assert parsed.counts["rows_exact_duplicates"] == 1


def test_parse_accepts_windows_line_endings(tmp_path):
    path = tmp_path / "labels.csv"
    rows = ["ID,Label"] + [f"ID_a_{label},0" for label in LABELS]
    path.write_bytes(("\r\n".join(rows) + "\r\n").encode())
    assert parse_long_csv(str(path)).wide["ID"].tolist() == ["ID_a"]


def test_wrong_header_and_empty_file_are_clear_errors(tmp_path):
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("image,label\nID_a_any,0\n")
    with pytest.raises(LabelsCsvError, match="header 'ID,Label'"):
        parse_long_csv(str(wrong))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(LabelsCsvError, match="empty"):
        parse_long_csv(str(empty))


def _wide(n_negative, positives):
    rows = [dict(ID=f"ID_{i:04x}", **{label: 0 for label in LABELS}) for i in range(n_negative)]
    start = n_negative
    for label, count in positives.items():
        for _ in range(count):
            rows.append(dict(ID=f"ID_{start:04x}", **{name: int(name in (label, "any")) for name in LABELS}))
            start += 1
    return pd.DataFrame(rows)


def test_sampling_counts_and_determinism():
    wide = _wide(500, {"epidural": 5, "subdural": 80, "intraparenchymal": 60, "subarachnoid": 40, "intraventricular": 30})
    sample = sample_balanced(wide, per_label=20, seed=1)
    assert sample["epidural"].sum() == 5  # fewer than asked: all of them
    for label in ("subdural", "intraparenchymal", "subarachnoid", "intraventricular"):
        assert sample[label].sum() == 20
    assert (sample["any"] == 0).sum() == 20
    assert len(sample) == 105
    pd.testing.assert_frame_equal(sample, sample_balanced(wide.sample(frac=1, random_state=3), 20, 1))
    assert not sample.equals(sample_balanced(wide, 20, 2))


def test_sampling_counts_multilabel_images_for_each_label():
    wide = _wide(50, {"subdural": 30})
    both = wide["subdural"] == 1
    wide.loc[both, "subarachnoid"] = 1  # every subdural image is also subarachnoid
    sample = sample_balanced(wide, per_label=10, seed=0)
    assert sample["subdural"].sum() == 10 and sample["subarachnoid"].sum() == 10


def test_sampling_rejects_non_positive_target():
    with pytest.raises(ValueError, match="per_label"):
        sample_balanced(_wide(3, {}), 0, 0)


def test_hostile_ids_in_the_csv_are_rejected_rows_not_paths(tmp_path):
    good = [f"ID_a_{label},0" for label in LABELS]
    hostile = [
        "/etc/passwd_any,0",  # absolute path
        "ID_..\\..\\x_any,0",  # Windows path trick
        "ID_1\x00f_any,0",  # NUL byte
        "ID_12cadc6aé_any,0",  # unicode
        "ID_١٢٣_any,0",  # non-ASCII digits
        '"ID_a,b"_any,0',  # quoted comma
    ]
    path = tmp_path / "labels.csv"
    path.write_bytes(("\n".join(["ID,Label", *good, *hostile]) + "\n").encode("utf-8"))
    parsed = parse_long_csv(str(path))
    assert parsed.wide["ID"].tolist() == ["ID_a"]
    assert len(parsed.rejected) == len(hostile)
    assert parsed.rejected["reason"].str.contains("does not match").all()
    assert parsed.counts["rows_malformed"] == len(hostile)


_REASON_ID = "image ID does not match ID_<hex>"
_REASON_VALUE = "label value is not 0 or 1"
_REASON_LABEL = "unknown label name (expected one of any, epidural, intraparenchymal, intraventricular, subarachnoid, subdural)"


@pytest.mark.parametrize("chunk_rows", [None, 5])
def test_parse_every_kind_of_problem_exactly(tmp_path, monkeypatch, chunk_rows):
    if chunk_rows is not None:  # also decode in many small chunks, one of them holding a non-ASCII ID
        monkeypatch.setattr("ich.data.labels_csv._CHUNK_ROWS", chunk_rows)
    long_id = "ID_0a" + "0" * 16  # more hex digits than the bulk path keys
    lines = [
        "ID,Label",
        # 1-6 ID_ff: subdural (conflicting below)
        "ID_ff_epidural,0",
        "ID_ff_intraparenchymal,0",
        "ID_ff_intraventricular,0",
        "ID_ff_subarachnoid,0",
        "ID_ff_subdural,1",
        "ID_ff_any,1",
        # 7-12 ID_0b: subdural
        "ID_0b_epidural,0",
        "ID_0b_intraparenchymal,0",
        "ID_0b_intraventricular,0",
        "ID_0b_subarachnoid,0",
        "ID_0b_subdural,1",
        "ID_0b_any,1",
        # 13-18 ID_0a: no bleed, fields padded with spaces and tabs
        " ID_0a_epidural ,0",
        "ID_0a_intraparenchymal, 0 ",
        "\tID_0a_intraventricular,0",
        "ID_0a_subarachnoid,0",
        "ID_0a_subdural,0",
        "ID_0a_any,0",
        # 19-24 ID_c1: epidural (conflicting below)
        "ID_c1_epidural,1",
        "ID_c1_intraparenchymal,0",
        "ID_c1_intraventricular,0",
        "ID_c1_subarachnoid,0",
        "ID_c1_subdural,0",
        "ID_c1_any,1",
        # 25-30 the long ID: epidural
        f"{long_id}_epidural,1",
        f"{long_id}_intraparenchymal,0",
        f"{long_id}_intraventricular,0",
        f"{long_id}_subarachnoid,0",
        f"{long_id}_subdural,0",
        f"{long_id}_any,1",
        # 31-34 ID_d: no intraparenchymal and no subarachnoid row
        "ID_d_epidural,0",
        "ID_d_intraventricular,0",
        "ID_d_subdural,0",
        "ID_d_any,0",
        # 35-40 ID_e: intraventricular but any 0
        "ID_e_epidural,0",
        "ID_e_intraparenchymal,0",
        "ID_e_intraventricular,1",
        "ID_e_subarachnoid,0",
        "ID_e_subdural,0",
        "ID_e_any,0",
        # 41-46 ID_1: no bleed
        "ID_1_epidural,0",
        "ID_1_intraparenchymal,0",
        "ID_1_intraventricular,0",
        "ID_1_subarachnoid,0",
        "ID_1_subdural,0",
        "ID_1_any,0",
        "ID_1_any,0",  # 47 exact duplicate
        "ID_ff_subdural,0",  # 48 conflicts with row 5
        "ID_c1_epidural,0",  # 49 conflicts with row 19
        "",  # blank: skipped, not counted
        "ID_0B_any,0",  # 50 upper-case hex
        "ID_0c_any,2",  # 51 value not 0/1
        "ID_0c_Any,0",  # 52 unknown label
        "ID_0c_headache,x",  # 53 unknown label and bad value: the label is reported
        "ID_é_any,x",  # 54 bad ID and bad value: the ID is reported
        "ID_0c_any\x00,0",  # 55 label 'any\x00'
        "  ID_0c_any,5",  # 56 reported stripped
    ]
    path = tmp_path / "labels.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))

    parsed = parse_long_csv(str(path))

    expected_wide = pd.DataFrame(
        [
            ["ID_0a", 0, 0, 0, 0, 0, 0],
            [long_id, 1, 1, 0, 0, 0, 0],
            ["ID_0b", 1, 0, 0, 0, 0, 1],
            ["ID_1", 0, 0, 0, 0, 0, 0],
        ],
        columns=["ID", "any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"],
    ).astype({label: "int8" for label in LABELS})
    pd.testing.assert_frame_equal(parsed.wide, expected_wide)
    assert parsed.rejected.columns.tolist() == ["ID", "reason"]
    assert list(zip(parsed.rejected["ID"], parsed.rejected["reason"])) == [
        ("ID_0B_any", _REASON_ID),
        ("ID_0c_any", _REASON_VALUE),
        ("ID_0c_Any", _REASON_LABEL),
        ("ID_0c_headache", _REASON_LABEL),
        ("ID_é_any", _REASON_ID),
        ("ID_0c_any\x00", _REASON_LABEL),
        ("ID_0c_any", _REASON_VALUE),
        ("ID_ff", "conflicting duplicate rows (same label, 0 and 1)"),  # in order of first appearance
        ("ID_c1", "conflicting duplicate rows (same label, 0 and 1)"),
        ("ID_d", "missing label rows: intraparenchymal, subarachnoid"),
        ("ID_e", "'any' disagrees with the subtypes (any must be 1 exactly when a subtype is)"),
    ]
    assert parsed.counts == {
        "rows_total": 56,
        "rows_malformed": 7,
        "rows_exact_duplicates": 1,
        "images_conflicting": 2,
        "images_incomplete": 1,
        "images_inconsistent_any": 1,
        "images_valid": 4,
    }


def test_header_without_rows_is_a_clear_error(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("ID,Label\n\n")
    with pytest.raises(LabelsCsvError, match="no rows"):
        parse_long_csv(str(path))
