import json

import pytest

from ich.core.labels import LABELS
from ich.models.card import MODEL_CARD, ModelCard, folder_card, model_card, read_model_card

THRESHOLDS = {label: 0.5 for label in LABELS}


def _card(**extra):
    return model_card(
        arch="cascade",
        described={"backbones": {"efficientnet": "efficientnetv2b0"}},
        networks={"stage1": "stage1.keras"},
        image_size=64,
        windows=[{"name": "blood", "center": 80, "width": 200}],
        weights=None,
        thresholds=THRESHOLDS,
        **extra,
    )


def test_a_card_written_and_read_back_keeps_every_field_and_the_recipe_facts(tmp_path):
    card = _card(train_images=803)
    (tmp_path / MODEL_CARD).write_text(json.dumps(card.to_json()))
    read = read_model_card(tmp_path)
    assert read == card
    written = json.loads((tmp_path / MODEL_CARD).read_text())
    assert written["backbones"] == {"efficientnet": "efficientnetv2b0"} and written["train_images"] == 803
    assert written["labels"] == list(LABELS) and written["combination"] == "product" and written["rsna_pixel_fix"] == "auto"


def test_an_older_card_reads_with_the_defaults_of_the_schema(tmp_path):
    minimal = {
        "arch": "efficientnetv2",
        "files": {"model": "model.keras"},
        "image_size": 32,
        "windows": [],
        "thresholds": THRESHOLDS,
    }
    (tmp_path / MODEL_CARD).write_text(json.dumps(minimal))
    card = read_model_card(tmp_path)
    assert (card.context_slices, card.combination, card.gate_threshold, card.rsna_pixel_fix) == (0, "product", 0.5, "auto")
    assert card.sequence is None and card.cnn_dir is None and card.cnn_thresholds is None


def test_the_folder_card_moves_the_final_thresholds_to_the_sequence_model():
    entry = {"dir": "sequence", "file": "sequence.keras", "units": 32, "thresholds": {label: 0.3 for label in LABELS}}
    card = folder_card(_card(), "cnn", entry)
    assert card.cnn_dir == "cnn" and card.cnn_thresholds == THRESHOLDS and card.thresholds["any"] == 0.3
    assert card.sequence is not None and card.sequence.file == "sequence.keras" and card.to_json()["sequence"]["units"] == 32
    assert folder_card(_card(), "cnn", None).thresholds == THRESHOLDS


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"combination": "sum"}, "combination: Input should be 'product' or 'gate'"),
        ({"image_size": "big"}, "image_size: Input should be a valid integer"),
        ({"cnn_dir": "../elsewhere"}, "cnn_dir: Value error, must be a plain subfolder name"),
        ({"sequence": {"dir": "/tmp", "file": "s.keras"}}, "sequence.dir: Value error, must be a plain subfolder name"),
    ],
)
def test_an_invalid_card_is_refused_with_the_field_and_the_reason(tmp_path, change, message):
    (tmp_path / MODEL_CARD).write_text(json.dumps({**_card().to_json(), **change}))
    with pytest.raises(ValueError, match=message):
        read_model_card(tmp_path)


def test_a_missing_card_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `dvc repro train`"):
        read_model_card(tmp_path)
    assert ModelCard.model_fields["rsna_pixel_fix"].default == "auto"


def test_predict_prints_the_cards_summary_in_one_paragraph():
    from ich.inference.cli import card_summary

    card = _card(train_images=803)
    assert card_summary(card) == (
        "Model: cascade (efficientnetv2b0); 64 px slices in the blood windows; trained on 803 images; decisions at "
        "per-label thresholds (best F1 on the validation split). For research use only, not for clinical use."
    )
