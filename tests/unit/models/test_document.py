"""The model card as a document: training-data summary, git identity, data hash, the folder's test evaluation, and
the paragraph `ich predict` prints."""

import hashlib
import json
import subprocess

import pandas as pd
import pytest

from ich.core.labels import LABELS
from ich.models.card import MODEL_CARD, ModelCard, read_model_card
from ich.models.document import (
    EVALUATION_FILE,
    INTENDED_USE,
    card_document,
    data_hash,
    document_of,
    evaluation_summary,
    git_identity,
    read_evaluation,
)
from tests.unit.models.test_card import _card


def _table(rows, patients, series, positives):
    frame = pd.DataFrame({"ID": [f"ID_{k:x}" for k in range(rows)], "PatientID": patients, "SeriesInstanceUID": series})
    for label in LABELS:
        frame[label] = positives.get(label, [0] * rows)
    return frame


TRAIN = _table(4, ["p1", "p1", "p2", "p2"], ["s1", "s1", "s2", "s3"], {"any": [1, 0, 1, 0], "subdural": [1, 0, 0, 0]})
AUGMENTED = _table(2, ["p1", "p2"], ["s1", "s2"], {"any": [1, 1], "subdural": [1, 1]})
VAL = _table(5, ["p3"] * 5, ["s4"] * 5, {"any": [1, 0, 0, 0, 0]})


def _git(root, *args):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=root, check=True, capture_output=True)


def test_document_counts_prevalence_hash_and_revision(tmp_path):
    (tmp_path / "ich").mkdir()
    (tmp_path / "ich/a.py").write_text("x = 1\n")
    tables = []
    for name, frame in (("train.csv", TRAIN), ("augmented.csv", AUGMENTED), ("val.csv", VAL)):
        frame.to_csv(tmp_path / name, index=False)
        tables.append(tmp_path / name)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "x")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    document = card_document(TRAIN, AUGMENTED, VAL, 64, [str(path) for path in tables], root=tmp_path)
    data = document["training_data"]
    assert (data["train_images"], data["augmented_copies"], data["validation_images"]) == (4, 2, 5)
    assert (data["train_patients"], data["train_series"], data["validation_patients"]) == (2, 3, 1)
    assert data["train_prevalence"]["any"] == round(4 / 6, 6) and data["train_prevalence"]["subdural"] == 3 / 6
    assert data["validation_prevalence"]["any"] == 0.2 and data["image_size"] == 64
    expected = hashlib.sha256()
    for path in tables:
        expected.update(str(path).encode() + b"\0" + path.read_bytes())
    assert document["data_hash"] == expected.hexdigest() == data_hash([str(path) for path in tables])
    assert (document["git_revision"], document["git_clean"]) == (head, True)
    (tmp_path / "ich/a.py").write_text("x = 2\n")
    assert git_identity(tmp_path) == (head, False)
    outside = tmp_path.parent / "not-a-repo"
    outside.mkdir()
    assert git_identity(outside) == (None, None)
    assert document["intended_use"] == INTENDED_USE and "not for diagnosis" in INTENDED_USE


def test_card_with_document_and_evaluation_reads_back_and_summarises(tmp_path):
    from ich.inference.cli import card_summary

    document = card_document(TRAIN, AUGMENTED, VAL, 64, [], root=tmp_path)  # no git here: revision None
    (tmp_path / MODEL_CARD).write_text(json.dumps({**_card().to_json(), **document}))
    headline = {"weighted_log_loss": 0.08888, "weighted_log_loss_ci95": [0.0534, 0.1267], "mean_subtype_auc": 0.97327}
    headline |= {label: {"auc": 0.9, "auc_ci95": [0.8, 0.95]} for label in LABELS}
    test = _table(3, ["a", "b", "b"], ["x", "y", "y"], {"any": [1, 1, 0]})
    (tmp_path / EVALUATION_FILE).write_text(json.dumps(evaluation_summary(headline, test)))
    card, evaluation = read_model_card(tmp_path), read_evaluation(tmp_path)
    assert evaluation is not None and evaluation.prevalence["any"] == pytest.approx(2 / 3, abs=1e-6)
    assert card_summary(card, evaluation) == (
        "Model: cascade (efficientnetv2b0); 64 px slices in the blood windows; trained on 4 slices of 2 patients "
        "(+2 augmented), 66.7 % with a bleed; decisions at per-label thresholds (best F1 on the validation split); on its "
        "test split (3 slices of 2 patients) weighted log loss 0.0889 [0.0534, 0.1267], mean subtype AUC 0.973. " + INTENDED_USE
    )


def test_invalid_document_fields_and_evaluations_are_refused(tmp_path):
    card = ModelCard.model_validate({**_card().to_json(), "intended_use": "research", "training_data": {"image_size": -1}})
    with pytest.raises(ValueError, match="document fields are not valid"):
        document_of(card)
    assert document_of(_card()) is None
    assert read_evaluation(tmp_path) is None
    (tmp_path / EVALUATION_FILE).write_text(json.dumps({"images": "many"}))
    with pytest.raises(ValueError, match="not a valid test evaluation"):
        read_evaluation(tmp_path)
