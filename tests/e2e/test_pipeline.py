"""End to end: real `dvc repro` in a temporary copy of the repository, on tiny params."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from ich.core.labels import LABELS
from tests.project import DATA_STAGES, ROOT, copy_repository, dvc, lock_hashes, run

ROOT_LOCK = ROOT / "dvc.lock"

TINY_PARAMS = {
    "synthesize": {"patients": 16, "slices_per_series": 8, "image_size": 64, "duplicate_rows": 6},
    "sample": {"per_label": 12},
    "preprocess": {"image_size": 32, "max_quarantine_fraction": 0.2},
}


@pytest.fixture(scope="module")
def data_project(tmp_path_factory):
    project = copy_repository(tmp_path_factory.mktemp("repo"), TINY_PARAMS)
    dvc("repro", "preprocess", cwd=project)
    return project


def _ids(project, name):
    return sorted(pd.read_csv(project / f"data/split/{name}.csv", dtype={"ID": str})["ID"])


def test_repro_through_preprocess_writes_the_contract_outputs(data_project):
    project = data_project
    pngs = {path.stem for path in (project / "data/png").glob("*.png")}
    index = pd.read_csv(project / "data/index.csv", dtype={"ID": str, "PatientID": str, "SeriesInstanceUID": str})
    quarantine = pd.read_csv(project / "data/quarantine.csv")
    sampled = pd.read_csv(project / "data/sampled.csv")
    assert list(quarantine.columns) == ["ID", "reason"]
    # every sampled image is either a PNG or quarantined with a reason
    assert set(sampled["ID"]) <= pngs | set(quarantine["ID"])
    assert quarantine["reason"].str.len().min() > 0
    assert any(quarantine["ID"].str.contains("../", regex=False))  # the planted path trick, reported
    assert quarantine["reason"].str.contains("file missing").any()  # the planted missing file, found by the index
    splits = {
        name: pd.read_csv(project / f"data/split/{name}.csv", dtype={"PatientID": str}) for name in ("train", "val", "test")
    }
    for frame in splits.values():
        assert {"ID", *LABELS, "PatientID", "SeriesInstanceUID", "position_z"} <= set(frame.columns)
    patients = [set(frame["PatientID"]) for frame in splits.values()]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    assert set().union(*(set(frame["ID"]) for frame in splits.values())) == pngs
    # val and test are whole series: every usable slice of each of their series, at the data's prevalence
    for name in ("val", "test"):
        frame = splits[name]
        for series, rows in frame.groupby("SeriesInstanceUID"):
            expected = set(index.loc[index["SeriesInstanceUID"] == series, "ID"]) - set(quarantine["ID"])
            assert set(rows["ID"]) == expected, (name, series)
    held_out = index[index["PatientID"].isin(patients[1] | patients[2])]
    assert len(splits["val"]) + len(splits["test"]) == len(set(held_out["ID"]) - set(quarantine["ID"]))
    outside = [p for p in project.parent.iterdir() if p.name.startswith("outside")]
    assert outside == []


def test_second_repro_runs_nothing_and_sampling_changes_leave_val_and_test_alone(data_project, tmp_path):
    project = data_project
    again = dvc("repro", "preprocess", cwd=project)
    assert "Running stage" not in again.stdout, again.stdout
    before = lock_hashes(project)
    held_out = {name: _ids(project, name) for name in ("val", "test")}
    train = _ids(project, "train")
    params = yaml.safe_load((project / "params.yaml").read_text())
    try:
        params["sample"].update(per_label=7, seed=3)
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        rerun = dvc("repro", "preprocess", cwd=project)
        assert "Running stage 'sample'" in rerun.stdout
        for stage in ("synthesize", "index", "split"):
            assert f"Running stage '{stage}'" not in rerun.stdout
        assert {name: _ids(project, name) for name in ("val", "test")} == held_out
        assert _ids(project, "train") != train
        after = lock_hashes(project)
        assert {k: after[k] for k in ("synthesize", "index", "split")} == {k: before[k] for k in ("synthesize", "index", "split")}
    finally:
        params["sample"].update(TINY_PARAMS["sample"], seed=42)
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        dvc("repro", "preprocess", cwd=project)
    assert lock_hashes(project) == before


def test_rerun_from_scratch_reproduces_data_stage_hashes(data_project, tmp_path):
    fresh = copy_repository(tmp_path, TINY_PARAMS)
    params = yaml.safe_load((data_project / "params.yaml").read_text())
    (fresh / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc("repro", "preprocess", cwd=fresh)
    assert lock_hashes(fresh) == lock_hashes(data_project)


def test_too_many_unusable_images_fail_with_a_clear_message(data_project, tmp_path):
    project = copy_repository(
        tmp_path, {**TINY_PARAMS, "preprocess": {**TINY_PARAMS["preprocess"], "max_quarantine_fraction": 0.0}}
    )
    result = dvc("repro", "preprocess", cwd=project, check=False)
    assert result.returncode != 0
    assert "max_quarantine_fraction" in result.stderr + result.stdout
    assert "data.dicom_dir" in result.stderr + result.stdout


TINY_FULL = {
    **TINY_PARAMS,
    "augment": {"target_per_label": 14},
    "model": {"fusion_units": 16},
    "train": {"epochs": 1, "batch_size": 8},
    "sequence": {"epochs": 3, "units": 4, "projection": 4},
    "evaluate": {"montage_images": 4},
}


@pytest.fixture(scope="module")
def full_project(tmp_path_factory):
    project = copy_repository(tmp_path_factory.mktemp("full"), TINY_FULL)
    dvc("repro", cwd=project)
    run(["git", "add", "-A"], cwd=project)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "repro"], cwd=project)
    return project


def test_full_repro_metrics_follow_the_contract_and_match_the_predictions(full_project):
    from sklearn.metrics import roc_auc_score

    from ich.evaluation.metrics import tune_thresholds, weighted_log_loss

    metrics = json.loads((full_project / "metrics/evaluate.json").read_text())
    detail = json.loads((full_project / "metrics/evaluate_detail.json").read_text())
    predictions = pd.read_csv(full_project / "data/predictions/test.csv")
    test = pd.read_csv(full_project / "data/split/test.csv")
    assert list(predictions.columns) == ["ID", *LABELS]
    assert predictions["ID"].tolist() == test["ID"].tolist()
    for label in LABELS:
        entry = metrics[label]
        assert set(entry) == {"auc", "auc_ci95", "threshold", "accuracy", "precision", "recall", "f1"}
        assert {key: entry[key] for key in ("threshold", "accuracy", "precision", "recall", "f1")} == detail[label]["tuned"]
        truth = test[label].to_numpy()
        if truth.min() == truth.max():
            assert entry["auc"] is None
        else:
            assert entry["auc"] == pytest.approx(roc_auc_score(truth, predictions[label]))
    assert metrics["weighted_log_loss"] == pytest.approx(
        weighted_log_loss(test[list(LABELS)].to_numpy(), predictions[list(LABELS)].to_numpy())
    )
    assert "mean_subtype_auc" in metrics
    card = json.loads((full_project / "models/model.json").read_text())
    assert card["labels"] == list(LABELS) and card["image_size"] == 32 and card["rsna_pixel_fix"] == "auto"
    assert set(card["files"]) == {"stage1", "stage2"} and card["cnn_dir"] == "cnn"
    assert card["sequence"]["file"] == "sequence.keras" and (full_project / "models/sequence/sequence.keras").is_file()
    # the out-of-distribution statistics, fitted on the train series with the threshold set on val
    assert card["ood"]["file"] == "ood.npz" and (full_project / "models/sequence/ood.npz").is_file()
    assert card["ood"]["threshold"] > 0 and 0 <= card["ood"]["val_false_alarm_rate"] <= 1
    # Slice context on: the final figures are the sequence model's, and both models are reported side by side
    # with the top level's schema.
    # The headline (metrics/evaluate.json, what `dvc metrics diff` shows) carries each model's loss and mean subtype
    # AUC and the context gain; the full blocks are in the detail file.
    assert set(metrics) == {
        *LABELS,
        "weighted_log_loss",
        "weighted_log_loss_ci95",
        "mean_subtype_auc",
        "by_model",
        "context_gain",
    }
    assert set(metrics["by_model"]) == {"cnn", "sequence"}
    for name, result in metrics["by_model"].items():
        assert set(result) == {"weighted_log_loss", "weighted_log_loss_ci95", "mean_subtype_auc"}
        assert result["weighted_log_loss"] == detail["by_model"][name]["weighted_log_loss"]
        assert {*LABELS, "weighted_log_loss", "weighted_log_loss_ci95", "mean_subtype_auc"} <= set(detail["by_model"][name])
    assert metrics["by_model"]["sequence"]["weighted_log_loss"] == metrics["weighted_log_loss"]
    gain = metrics["context_gain"]
    assert gain["change"] == pytest.approx(
        metrics["by_model"]["sequence"]["weighted_log_loss"] - metrics["by_model"]["cnn"]["weighted_log_loss"]
    )
    shown = dvc("metrics", "show", "--json", cwd=full_project).stdout
    assert "metrics/evaluate.json" in shown and "metrics/evaluate_detail.json" not in shown and "metrics/index.json" not in shown
    sequence_metrics = json.loads((full_project / "metrics/sequence.json").read_text())
    assert sequence_metrics["features_images_per_s"] > 0 and sequence_metrics["train_series"] > 0
    # dvclive wrote per-epoch training curves for both cascade stages, and the evaluation plots exist
    assert (full_project / "dvclive/train/plots/metrics/stage2/eval/auc_subdural.tsv").exists()
    assert list((full_project / "dvclive/evaluate/plots/sklearn/confusion").glob("*.json"))
    assert (full_project / "dvclive/evaluate/plots/images/montage.png").exists()
    shown = json.loads(dvc("plots", "show", "--json", cwd=full_project).stdout)["data"]
    assert {"Loss, stage 1 (train vs validation)", "AUC, stage 2 (train vs validation)", "ROC per label (test)"} <= set(shown)
    # Intervals, series-level figures, and the tuned thresholds recomputed from the validation predictions.
    assert "weighted_log_loss_ci95" in metrics and "series_level" in detail
    assert detail["images"] == len(test) and detail["patients"] == test["PatientID"].nunique()
    val = pd.read_csv(full_project / "data/split/val.csv")
    val_predictions = pd.read_csv(full_project / "data/predictions/val.csv")
    assert val_predictions["ID"].tolist() == val["ID"].tolist()
    recomputed = tune_thresholds(val[list(LABELS)].to_numpy(), val_predictions[list(LABELS)].to_numpy())
    for label in LABELS:
        assert metrics[label]["threshold"] == pytest.approx(recomputed[label], abs=1e-6), label
        assert card["thresholds"][label] == metrics[label]["threshold"]
    # the offline report: every chart a PNG, no network address in the page
    report = (full_project / "plots/report.html").read_text()
    assert "http://" not in report and "https://" not in report and "<script" not in report
    assert {path.name for path in (full_project / "plots").glob("*.png")} >= {
        "roc.png",
        "precision_recall.png",
        "calibration.png",
    }


def test_predict_on_the_test_dicoms_reproduces_evaluates_test_predictions(full_project, tmp_path):
    """`ich predict` on the test split's DICOM files (whole series, named as they are) with the trained model folder
    gives evaluate's final test predictions: the same reading, windows and rendering (in memory, not via PNGs), the
    same CNN and the same sequence model over each series."""
    import shutil

    test = pd.read_csv(full_project / "data/split/test.csv", dtype={"ID": str})
    folder = tmp_path / "studies"
    folder.mkdir()
    for image_id in test["ID"]:
        shutil.copyfile(full_project / "data/dicom" / f"{image_id}.dcm", folder / f"{image_id}.dcm")
    out = tmp_path / "out"
    run(
        ["python", "-m", "ich.predict", str(folder), "--models", str(full_project / "models"), "--out", str(out)],
        cwd=full_project,
    )
    evaluated = pd.read_csv(full_project / "data/predictions/test.csv", dtype={"ID": str}).set_index("ID").sort_index()
    predicted = pd.read_csv(out / "slices.csv", dtype={"ID": str}).set_index("ID").sort_index()
    assert predicted.index.tolist() == evaluated.index.tolist()
    np.testing.assert_allclose(predicted[list(LABELS)].to_numpy(), evaluated[list(LABELS)].to_numpy(), rtol=0, atol=1e-5)
    assert pd.read_csv(out / "quarantine.csv").empty
    summary = json.loads((out / "summary.json").read_text())  # every series checked against the training data
    assert summary["ood_checked"] is True and 0 <= summary["ood_series"] <= summary["series"]
    assert pd.read_csv(out / "series.csv")["out_of_distribution"].sum() == summary["ood_series"]


@pytest.mark.slow  # half a minute of dvc repro; CI runs it in its slow pass
def test_a_sequence_param_reruns_only_sequence_and_evaluate_and_reuses_the_features(full_project, tmp_path):
    project = copy_repository(tmp_path, TINY_FULL)
    for folder in ("data", "models", "metrics", "dvclive", "checkpoints", "plots"):
        run(["cp", "-a", str(full_project / folder), str(project)], cwd=project)
    run(["cp", str(full_project / "dvc.lock"), str(project)], cwd=project)
    run(["cp", "-a", str(full_project / ".dvc/cache"), str(project / ".dvc")], cwd=project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["sequence"]["units"] = 6
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = dvc("repro", cwd=project)
    ran = set(re.findall(r"Running stage '(\w+)'", result.stdout))
    assert ran == {"sequence", "evaluate"}, result.stdout
    assert json.loads((project / "metrics/sequence.json").read_text())["features_computed"] == 0  # reused from the store
    card = json.loads((project / "models/model.json").read_text())
    assert card["sequence"]["units"] == 6
    # Switched off: the CNN's predictions are final, and evaluate reports no per-model figures.
    params["sequence"]["enabled"] = False
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = dvc("repro", cwd=project)
    assert set(re.findall(r"Running stage '(\w+)'", result.stdout)) == {"sequence", "evaluate"}, result.stdout
    assert json.loads((project / "models/model.json").read_text())["sequence"] is None
    assert json.loads((project / "models/model.json").read_text())["ood"]["file"] == "ood.npz"  # checked all the same
    metrics = json.loads((project / "metrics/evaluate.json").read_text())
    assert "by_model" not in metrics and "context_gain" not in metrics
    predictions = pd.read_csv(project / "data/predictions/test.csv")
    assert not (project / "models/sequence/sequence.keras").exists() and len(predictions) == len(
        pd.read_csv(project / "data/split/test.csv")
    )


@pytest.mark.slow  # a minute or more of dvc exp; CI runs it in its slow pass
def test_experiment_run_reruns_only_training_and_metrics_diff_reports_it(full_project):
    # Params of the train stage only (the single-backbone model keeps it short; the fixture ran the cascade).
    result = dvc("exp", "run", "-S", "train.epochs=2", "-S", "model.arch=efficientnetv2", cwd=full_project)
    assert "Running stage 'train'" in result.stdout and "Running stage 'evaluate'" in result.stdout
    for stage in ("synthesize", "index", "split", "sample", "copy", "preprocess", "augment"):
        assert f"Running stage '{stage}'" not in result.stdout
    diff = dvc("metrics", "diff", "--json", cwd=full_project).stdout
    assert "metrics/evaluate.json" in diff
    shown = dvc("exp", "show", "--csv", cwd=full_project).stdout
    assert "train.epochs" in shown and "weighted_log_loss" in shown
    # ich experiments: every run with the metrics it wrote, the params that differ, and the page of any two
    listed = run(
        [sys.executable, "-m", "ich.evaluation.experiments_cli", "--json", "runs.json", "--html", "runs.html"], cwd=full_project
    )
    runs = json.loads((full_project / "runs.json").read_text())
    assert runs["changed_params"] == ["model.arch", "train.epochs"]
    experiment = next(entry for entry in runs["runs"] if entry["kind"] == "experiment")
    workspace = json.loads((full_project / "metrics/evaluate.json").read_text())  # exp run leaves its results here
    assert experiment["headline"] == workspace and experiment["params"] == {"model.arch": "efficientnetv2", "train.epochs": 2}
    baseline = next(entry for entry in runs["runs"] if entry["kind"] == "baseline")
    committed = json.loads(run(["git", "show", "HEAD:metrics/evaluate.json"], cwd=full_project).stdout)
    assert baseline["headline"] == committed
    assert f"{workspace['weighted_log_loss']:.4f}" in listed.stdout
    page = (full_project / "runs.html").read_text()
    assert "vegaEmbed" in page and experiment["name"] in page
    markup = re.sub(r"<script>.*?</script>", "", page, flags=re.S)  # the inlined Vega bundle holds markup in strings
    assert "<script src" not in page and not re.search(r"<(img|link)[^>]+(src|href)=\s*\"?(https?:|//)", markup)


def test_committed_lock_data_stage_hashes_reproduce_on_this_machine(tmp_path):
    """The dvc.lock in the repository was written on another machine: every data stage, run here from
    scratch on the committed params, gives the same output hashes bit for bit."""
    expected = yaml.safe_load(ROOT_LOCK.read_text())["stages"]
    project = copy_repository(tmp_path, {})
    stages = (*DATA_STAGES, "augment")
    dvc("repro", "augment", cwd=project)
    fresh = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    for stage in stages:
        assert fresh[stage]["outs"] == expected[stage]["outs"], stage
        assert fresh[stage]["deps"] == expected[stage]["deps"], f"{stage}: code or inputs differ from the lock"


def test_a_windowing_code_change_invalidates_preprocess_and_not_before(data_project):
    windows = data_project / "ich/imaging/windows.py"
    original = windows.read_text()
    try:
        windows.write_text(original + "\n# changed\n")
        changed = json.loads(dvc("status", "--with-deps", "preprocess", "--json", cwd=data_project).stdout)
        assert set(changed) == {"preprocess"}, changed
    finally:
        windows.write_text(original)
    assert json.loads(dvc("status", "--with-deps", "preprocess", "--json", cwd=data_project).stdout) == {}


def test_on_other_data_the_final_stage_never_runs_the_synthesizer(tmp_path):
    """With `data.*` pointed at another RSNA-layout set, `dvc repro evaluate` (the README's RSNA command) runs
    every stage from `sample` on and not `synthesize`, which writes the demo's 3,640 DICOMs."""
    project = copy_repository(
        tmp_path / "repo", {"data": {"labels_csv": "rsna/stage_2_train.csv", "dicom_dir": "rsna/stage_2_train"}}
    )

    def upstream(project):  # the stages `dvc repro evaluate` runs: evaluate and its ancestors in the DAG
        return set(re.findall(r'"([a-z_]+)"', dvc("dag", "--dot", "evaluate", cwd=project).stdout))

    stages = set(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])
    assert upstream(project) == stages - {"synthesize"}
    # while on the demo's defaults the same command synthesizes the data first
    assert upstream(copy_repository(tmp_path / "demo")) == stages
