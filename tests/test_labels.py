import pandas as pd
import pytest

from ich.labels import LABELS, LabelsCsvError, is_valid_id, parse_long_csv, sample_balanced, validate_id
from tests.helpers import write_long_csv


@pytest.mark.parametrize("good", ["ID_12cadc6af", "ID_0", "ID_abcdef0123"])
def test_valid_ids(good):
    assert is_valid_id(good)
    assert validate_id(good) == good


@pytest.mark.parametrize(
    "bad",
    ["ID_../../etc/passwd", "/etc/passwd", "ID_12\x00ab", "ID_ABC", "ID_12cadc6aé", "ID_", "id_12", "ID_1/2",
     "ID_" + "a" * 100, "", None, 12],
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
        for i in range(count):
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
