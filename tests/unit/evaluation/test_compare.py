"""`ich compare A B`: the paired patient-bootstrap difference checked on every resample of a three-patient case and
against its exhaustive enumeration, the command end to end on git revisions, a DVC experiment and folders (values
recomputed with scikit-learn and by hand), and every error a user can meet."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from ich.core.errors import PipelineError
from ich.core.labels import LABELS
from ich.evaluation.comparison import paired_log_loss_change
from ich.evaluation.paired import BETTER, NO_DIFFERENCE, WORSE, paired_comparison, paired_draws
from ich.evaluation.runs import Run, load_run, pair_runs

METRICS = ["weighted_log_loss", *(f"{label}.auc" for label in LABELS), "mean_subtype_auc"]


def hand_wll(y, p):
    """The competition metric by hand: per-label mean log loss after clipping, any x2, subtypes x1, over 7."""
    p = np.clip(p, 1e-15, 1 - 1e-15)
    losses = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=0)
    return float((losses * np.array([2, 1, 1, 1, 1, 1])).sum() / 7)


def hand_metrics(y, p):
    """Every compared metric of one run, with scikit-learn's AUC (None where a label has one class)."""
    aucs = [roc_auc_score(y[:, i], p[:, i]) if 0 < y[:, i].sum() < len(y) else None for i in range(6)]
    mean = None if any(auc is None for auc in aucs[1:]) else float(np.mean(aucs[1:]))
    return dict(zip(METRICS, [hand_wll(y, p), *aucs, mean]))


# Three patients of two images each; B is A moved towards the truth on most images, away on some.
GROUPS = np.array(["p1", "p1", "p2", "p2", "p3", "p3"])
# Every patient has both classes of every label but epidural, positive in p1 only: the 8 resamples without p1
# have no epidural AUC, hence no mean subtype AUC.
TRUTH = np.array(
    [[1, 0, 1, 0, 0, 1], [1, 0, 0, 0, 0, 0], [0, 1, 1, 0, 1, 0], [1, 0, 0, 1, 0, 1], [0, 1, 0, 1, 1, 0], [1, 0, 1, 0, 1, 0]]
).T
_rng = np.random.default_rng(4)
PROB_A = _rng.uniform(0.05, 0.95, size=(6, 6))
PROB_B = np.clip(PROB_A + np.where(TRUTH > 0, 0.15, -0.15) * np.where(_rng.random((6, 6)) < 0.75, 1, -1), 0.01, 0.99)


def resample(picks):
    """The rows of a resample that draws the patients ``picks`` (indices into p1, p2, p3), in that order."""
    return np.concatenate([np.flatnonzero(GROUPS == f"p{pick + 1}") for pick in picks])


def enumeration():
    """Every one of the 27 equally likely ordered draws of three patients: its per-patient counts, and each
    metric of A and B on the resampled arrays themselves (None where undefined)."""
    for picks in itertools.product(range(3), repeat=3):
        rows = resample(picks)
        yield np.bincount(picks, minlength=3), hand_metrics(TRUTH[rows], PROB_A[rows]), hand_metrics(TRUTH[rows], PROB_B[rows])


def test_every_resample_scores_both_runs_as_the_resampled_arrays_do():
    cases = list(enumeration())
    per_draw = paired_draws(TRUTH, PROB_A, PROB_B, GROUPS, np.array([counts for counts, _, _ in cases]))
    assert list(per_draw) == METRICS
    for draw, (counts, hand_a, hand_b) in enumerate(cases):
        for name in METRICS:
            code_a, code_b = per_draw[name][0][draw], per_draw[name][1][draw]
            if hand_a[name] is None:
                assert np.isnan(code_a) and np.isnan(code_b), (counts, name)
            else:
                assert code_a == pytest.approx(hand_a[name], abs=1e-12), (counts, name)
                assert code_b - code_a == pytest.approx(hand_b[name] - hand_a[name], abs=1e-12), (counts, name)


DRAWS = 100_000


def test_interval_and_share_converge_to_the_exhaustive_enumeration():
    # The exact paired bootstrap distribution of B - A: the 27 ordered draws, equally likely (those where a metric is
    # undefined left out). Each has probability >= 1/27 = 3.7 % > 2.5 % + 5 standard errors of a sampled share, so
    # 100,000 seeded draws put the 2.5th and 97.5th percentiles exactly on the smallest and largest difference.
    exact = {name: [] for name in METRICS}
    for _, hand_a, hand_b in enumeration():
        for name in METRICS:
            if hand_a[name] is not None:
                exact[name].append((hand_b[name] - hand_a[name], hand_b[name] < hand_a[name], hand_b[name] > hand_a[name]))
    standard_error = np.sqrt(0.25 / DRAWS)
    assert 1 / 27 - 0.025 > 5 * standard_error
    rows = paired_comparison(TRUTH, PROB_A, PROB_B, GROUPS, draws=DRAWS, seed=1)
    assert [row.name for row in rows] == METRICS
    full_a, full_b = hand_metrics(TRUTH, PROB_A), hand_metrics(TRUTH, PROB_B)
    for row in rows:
        differences = np.array([difference for difference, _, _ in exact[row.name]])
        lower, higher = (np.array([flags[i] for flags in exact[row.name]]) for i in (1, 2))
        assert len(differences) == (19 if row.name in ("epidural.auc", "mean_subtype_auc") else 27), row.name
        assert row.a == pytest.approx(full_a[row.name], abs=1e-12) and row.b == pytest.approx(full_b[row.name], abs=1e-12)
        assert row.difference == pytest.approx(full_b[row.name] - full_a[row.name], abs=1e-12)
        assert row.difference_ci95 == pytest.approx([differences.min(), differences.max()], abs=1e-12), row.name
        share = (lower if row.lower_is_better else higher).mean()
        assert row.share_b_better == pytest.approx(share, abs=5 * standard_error), row.name


def synthetic(images=80, patients=16, seed=0, noise_a=0.25, noise_b=0.12):
    rng = np.random.default_rng(seed)
    groups = np.array([f"P{code:02d}" for code in rng.integers(0, patients, images)])
    truth = (rng.random((images, 6)) < [0.4, 0.2, 0.25, 0.25, 0.25, 0.25]).astype(int)
    truth[:2] = [[1] * 6, [0] * 6]  # both classes of every label
    prob_a = np.clip(0.25 + 0.5 * truth + rng.normal(0, noise_a, truth.shape), 0.01, 0.99)
    prob_b = np.clip(0.25 + 0.5 * truth + rng.normal(0, noise_b, truth.shape), 0.01, 0.99)
    return truth, prob_a, prob_b, groups


def test_the_summary_follows_the_documented_draws_recomputed_on_resampled_arrays():
    truth, prob_a, prob_b, groups = synthetic()
    draws, seed = 120, 7
    patients = np.unique(groups)  # resamples number the patients in sorted key order
    picks = np.random.default_rng(seed).integers(0, len(patients), size=(draws, len(patients)))
    per_draw = {name: [] for name in METRICS}
    for row in picks:
        rows = np.concatenate([np.flatnonzero(groups == patients[pick]) for pick in row])
        hand_a, hand_b = hand_metrics(truth[rows], prob_a[rows]), hand_metrics(truth[rows], prob_b[rows])
        for name in METRICS:
            per_draw[name].append(np.nan if hand_a[name] is None else (hand_b[name] - hand_a[name]))
    results = {row.name: row for row in paired_comparison(truth, prob_a, prob_b, groups, draws=draws, seed=seed)}
    for name in METRICS:
        differences = np.array(per_draw[name])
        valid = differences[np.isfinite(differences)]
        assert results[name].valid_draws == len(valid) >= 100, name
        assert results[name].difference_ci95 == pytest.approx(list(np.percentile(valid, [2.5, 97.5])), abs=1e-12), name
        better = valid < 0 if name == "weighted_log_loss" else valid > 0
        assert results[name].share_b_better == pytest.approx(better.mean(), abs=1e-12), name
    # The same resamples as the evaluate stage's paired log-loss change of two models.
    change = paired_log_loss_change(truth, prob_a, prob_b, groups, draws=draws, seed=seed)
    assert results["weighted_log_loss"].difference_ci95 == pytest.approx(change["change_ci95"], abs=1e-12)
    assert results["weighted_log_loss"].share_b_better == pytest.approx(change["share_of_draws_better"], abs=1e-12)


def test_verdicts_better_worse_and_no_difference():
    truth, prob_a, prob_b, groups = synthetic(images=200, patients=40)
    better = paired_comparison(truth, prob_a, prob_b, groups, draws=300)
    assert better[0].verdict == BETTER and better[0].difference_ci95[1] < 0
    assert paired_comparison(truth, prob_b, prob_a, groups, draws=300)[0].verdict == WORSE
    same = paired_comparison(truth, prob_a, prob_a, groups, draws=300)
    assert {row.verdict for row in same} == {NO_DIFFERENCE}
    assert {row.share_b_better for row in same} == {0.0}
    with pytest.raises(ValueError, match=r"must all be \(N, 6\) with N = len\(groups\) = 200"):
        paired_comparison(truth, prob_a[:-1], prob_b, groups)


# --- the command, end to end -------------------------------------------------------------------------------


def git(*arguments, cwd):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *arguments], cwd=cwd, check=True, capture_output=True)


def tables(images=60, patients=12, seed=0, noise=0.25):
    truth, prob, _, groups = synthetic(images, patients, seed, noise_a=noise)
    ids = [f"ID_{index:05x}" for index in range(images)]
    split = pd.DataFrame(truth, columns=list(LABELS)).assign(ID=ids, PatientID=groups, SeriesInstanceUID="ID_s")
    predictions = pd.DataFrame(prob, columns=list(LABELS)).assign(ID=ids)
    return split[["ID", *LABELS, "PatientID", "SeriesInstanceUID"]], predictions[["ID", *LABELS]]


def write(repo, split, predictions):
    (repo / "data/split").mkdir(parents=True, exist_ok=True)
    (repo / "data/predictions").mkdir(parents=True, exist_ok=True)
    split.to_csv(repo / "data/split/test.csv", index=False)
    predictions.to_csv(repo / "data/predictions/test.csv", index=False)


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    """A git + DVC repository whose tags A and B hold two runs' predictions of the same test split (plain git
    files), and C a run on a smaller split."""
    repo = tmp_path_factory.mktemp("tagged")
    git("init", "-q", cwd=repo)
    subprocess.run(["dvc", "init", "-q"], cwd=repo, check=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    git("commit", "-qm", "dvc init", cwd=repo)
    git("tag", "empty", cwd=repo)
    split, run_a = tables(noise=0.3)
    run_b = tables(noise=0.1)[1]  # the same errors as A's, a third as large
    for tag, (truth, predictions) in {"A": (split, run_a), "B": (split, run_b), "C": (split[:-5], run_b[:-5])}.items():
        write(repo, truth, predictions)
        git("add", "-A", cwd=repo)
        git("commit", "-qm", f"run {tag}", cwd=repo)
        git("tag", tag, cwd=repo)
    write(repo, split, run_b)
    return repo, split, run_a, run_b


def expected(split, run_a, run_b):
    y = split[list(LABELS)].to_numpy()
    return hand_metrics(y, run_a[list(LABELS)].to_numpy()), hand_metrics(y, run_b[list(LABELS)].to_numpy())


def printed_rows(out):
    lines = out.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("metric "))
    return {line.split()[0]: line.split() for line in lines[start + 1 : start + 1 + len(METRICS)]}


def check_printed_and_json(out, result, split, run_a, run_b):
    hand_a, hand_b = expected(split, run_a, run_b)
    rows = printed_rows(out)
    for name in METRICS:
        digits = 4 if name == "weighted_log_loss" else 3
        assert rows[name][1:4] == [
            f"{hand_a[name]:.{digits}f}",
            f"{hand_b[name]:.{digits}f}",
            f"{hand_b[name] - hand_a[name]:.{digits}f}",
        ]
        assert result["metrics"][name]["a"] == pytest.approx(hand_a[name], abs=1e-12)
        assert result["metrics"][name]["b"] == pytest.approx(hand_b[name], abs=1e-12)
    truth, groups = split[list(LABELS)].to_numpy(), split["PatientID"].to_numpy()
    change = paired_log_loss_change(truth, run_a[list(LABELS)].to_numpy(), run_b[list(LABELS)].to_numpy(), groups, 200, 3)
    loss = result["metrics"]["weighted_log_loss"]
    assert loss["difference_ci95"] == pytest.approx(change["change_ci95"], abs=1e-12)
    assert loss["share_b_better"] == pytest.approx(change["share_of_draws_better"], abs=1e-12)
    low, high = change["change_ci95"]
    assert rows["weighted_log_loss"][4:6] == [f"[{low:.4f},", f"{high:.4f}]"]
    assert (result["images"], result["patients"]) == (len(split), split["PatientID"].nunique())
    assert (result["draws"], result["seed"]) == (200, 3)


def test_compare_two_tags_prints_the_table_and_writes_json_and_the_page(tagged, tmp_path, monkeypatch, capsys):
    from ich.cli import main

    repo, split, run_a, run_b = tagged
    monkeypatch.chdir(repo)
    main(
        [
            "compare",
            "A",
            "B",
            "--draws",
            "200",
            "--seed",
            "3",
            "--json",
            str(tmp_path / "c.json"),
            "--html",
            str(tmp_path / "c.html"),
        ]
    )
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "c.json").read_text())
    check_printed_and_json(out, result, split, run_a, run_b)
    commit = subprocess.run(["git", "rev-parse", "A"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    assert result["a"] == {
        "name": "A",
        "kind": "revision",
        "commit": commit,
        "predictions": f"data/predictions/test.csv@{commit}",
        "truth": f"data/split/test.csv@{commit}",
    }
    assert result["metrics"]["weighted_log_loss"]["verdict"] == BETTER
    assert "B is better than A beyond the bootstrap interval: weighted_log_loss B - A = " in out
    page = (tmp_path / "c.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    assert not any(tag in page for tag in ('src="http', "<script", "<link", "href="))  # offline: loads nothing
    assert all(f'<th scope="row">{name}</th>' in page for name in METRICS)
    assert f"<td>{result['metrics']['any.auc']['b']:.3f}</td>" in page


def test_compare_folders_gives_the_same_numbers_with_the_workspace_or_a_given_truth(tagged, tmp_path, monkeypatch, capsys):
    from ich.compare import main

    repo, split, run_a, run_b = tagged
    for name, frame in (("a", run_a), ("b", run_b)):
        (tmp_path / name).mkdir()
        frame.sample(frac=1, random_state=0).to_csv(tmp_path / name / "test.csv", index=False)  # order does not matter
    monkeypatch.chdir(repo)  # the truth: the workspace's data/split/test.csv
    main([str(tmp_path / "a"), str(tmp_path / "b"), "--draws", "200", "--seed", "3", "--json", str(tmp_path / "w.json")])
    check_printed_and_json(capsys.readouterr().out, json.loads((tmp_path / "w.json").read_text()), split, run_a, run_b)
    shutil.copy(repo / "data/split/test.csv", tmp_path / "truth.csv")
    monkeypatch.chdir(tmp_path)  # no repository: the truth is given
    main(["a", "b/test.csv", "--truth", "truth.csv", "--draws", "200", "--seed", "3", "--json", "t.json"])
    given = json.loads((tmp_path / "t.json").read_text())
    check_printed_and_json(capsys.readouterr().out, given, split, run_a, run_b)
    assert given["b"] == {
        "name": "b/test.csv",
        "kind": "folder",
        "commit": None,
        "predictions": "b/test.csv",
        "truth": "truth.csv",
    }


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["A", "C"], r"Runs A and B do not cover the same test images: 60 vs 55 images, 55 in common; 5 only in A \(A\)"),
        (["A", "nosuch"], r"'nosuch' is neither a folder nor a git revision or DVC experiment of .*dvc exp list"),
        (["A", "data"], r"The folder 'data' holds no test.csv"),
        (["A", "B", "--draws", "0"], r"--draws must be at least 1"),
        (["empty", "A"], r"Could not read data/predictions/test.csv at 'empty' \(commit [0-9a-f]{7}\).*dvc fetch --all-commits"),
    ],
)
def test_errors_say_what_differs_and_how_to_fix_it(tagged, monkeypatch, capsys, arguments, message):
    from ich.compare import main

    monkeypatch.chdir(tagged[0])
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 1
    assert re.search(message, capsys.readouterr().err)


def test_a_folder_needs_a_truth_and_runs_need_the_same_images_and_truth(tmp_path):
    split, predictions = tables()
    (tmp_path / "run").mkdir()
    predictions.to_csv(tmp_path / "run/test.csv", index=False)
    with pytest.raises(PipelineError, match=r"No truth for the predictions folder .*Pass --truth PATH"):
        load_run(str(tmp_path / "run"), repository=None)
    with pytest.raises(PipelineError, match=r"'HEAD' is not a folder, and there is no DVC repository here"):
        load_run("HEAD", repository=None)
    truth = split.drop(columns="SeriesInstanceUID")
    truth.to_csv(tmp_path / "truth.csv", index=False)

    def run(name, predictions, truth):
        return Run(name, f"{name}.csv", f"{name}-truth.csv", None, predictions, truth)

    with pytest.raises(PipelineError, match=r"Run B \(b\): b.csv and b-truth.csv do not hold the same images: 57 vs 60"):
        pair_runs(run("a", predictions, truth), run("b", predictions[3:], truth))
    relabelled = truth.copy()
    relabelled.loc[4, "epidural"] = 1 - relabelled.loc[4, "epidural"]
    with pytest.raises(PipelineError, match=r"disagree on the labels or patient of 1 images, e.g. ID_00004"):
        pair_runs(run("a", predictions, truth), run("b", predictions, relabelled))
    (tmp_path / "bad").mkdir()
    predictions.drop(columns="subdural").to_csv(tmp_path / "bad/test.csv", index=False)
    with pytest.raises(PipelineError, match=r"lacks the columns subdural; expected test predictions"):
        load_run(str(tmp_path / "bad"), truth=tmp_path / "truth.csv")


def test_an_experiment_name_is_a_run(tmp_path, monkeypatch, capsys):
    """A DVC experiment whose predictions are a DVC output, read from the cache: `dvc exp run -n sharper -S noise=0.1`."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    git("init", "-q", cwd=tmp_path)
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True, env=env)
    split, run_a = tables(noise=0.3)
    run_b = tables(noise=0.1)[1]
    write(tmp_path, split, run_a)
    (tmp_path / "data/predictions/test.csv").unlink()
    (tmp_path / "runs").mkdir()
    run_a.to_csv(tmp_path / "runs/noise-0.3.csv", index=False)
    run_b.to_csv(tmp_path / "runs/noise-0.1.csv", index=False)
    (tmp_path / "params.yaml").write_text("noise: 0.3\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  predict:\n    cmd: cp runs/noise-${noise}.csv data/predictions/test.csv\n"
        "    deps: [runs]\n    params: [noise]\n    outs: [data/predictions/test.csv]\n"
    )
    subprocess.run(["dvc", "repro", "-q"], cwd=tmp_path, check=True, env=env, capture_output=True)
    git("add", "-A", cwd=tmp_path)
    git("commit", "-qm", "baseline", cwd=tmp_path)
    dvc_exp = ["dvc", "exp", "run", "-q", "-n", "sharper", "-S", "noise=0.1"]
    subprocess.run(dvc_exp, cwd=tmp_path, check=True, env=env, capture_output=True)
    assert pd.read_csv(tmp_path / "data/predictions/test.csv").equals(run_b)  # the experiment's run is in the workspace
    git("checkout", "-q", "--", ".", cwd=tmp_path)  # back to the baseline: the experiment is read from its ref
    subprocess.run(["dvc", "checkout", "-q"], cwd=tmp_path, check=True, env=env, capture_output=True)
    assert pd.read_csv(tmp_path / "data/predictions/test.csv").equals(run_a)
    monkeypatch.chdir(tmp_path)
    from ich.compare import main

    main(["HEAD", "sharper", "--draws", "200", "--seed", "3", "--json", "e.json"])
    result = json.loads((tmp_path / "e.json").read_text())
    check_printed_and_json(capsys.readouterr().out, result, split, run_a, run_b)
    assert result["b"]["kind"] == "revision" and result["b"]["name"] == "sharper"


def test_the_page_escapes_names_and_writes_missing_numbers_as_a_dash():
    from ich.reports.compare_page import compare_html, overlaid_curves_spec

    hostile = "<script>alert('x')</script>"
    run = {"name": hostile, "kind": "folder", "commit": None, "predictions": f"{hostile}/test.csv", "truth": "t.csv"}
    row = {
        **{key: None for key in ("a", "a_ci95", "difference", "difference_ci95", "share_b_better")},
        **{"name": "epidural.auc", "kind": "metric", "b": 0.5, "b_ci95": [0.4, 0.6], "verdict": "undefined"},
    }
    page = compare_html(f"Is B ({hostile}) better?", [run, run], [row], "No verdict.", [("bootstrap", "10 draws")], {})
    assert "<script" not in page and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    cells = "<td>–</td><td>–</td><td>0.500</td><td>[0.400, 0.600]</td><td>–</td><td>–</td><td>–</td>"
    assert f'<tr><th scope="row">epidural.auc</th>{cells}<td class="text">undefined</td></tr>' in page
    truth, prob_a, prob_b, _ = synthetic(images=20)
    truth[:, 1] = 0  # no epidural positive: no curve
    spec = overlaid_curves_spec(truth, {"A: x": prob_a, "B: y": prob_b}, "roc")
    titles = [panel["title"]["text"] for panel in spec["concat"]]
    assert titles[1] == "epidural: no curve (one class only)"
    assert (
        titles[0]
        == f"any: AUC A: x {roc_auc_score(truth[:, 0], prob_a[:, 0]):.3f}, B: y {roc_auc_score(truth[:, 0], prob_b[:, 0]):.3f}"
    )
    with pytest.raises(ValueError, match="kind must be one of roc, precision_recall. Received: 'det'"):
        overlaid_curves_spec(truth, {"A": prob_a}, "det")
