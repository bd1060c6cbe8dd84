"""task=multilabel (tlkit/model/multilabel.py): the table's layouts, the single-label refusal before TensorFlow, the NumPy
AP against scikit-learn, thresholds, and one end-to-end run on rendered shapes (tlkit/data/shapes.py)."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from tlkit.config.store import as_train_config
from tlkit.errors import ConfigError, DataError

ML_BASE = {"backbone": {"name": "vgg16", "weights": None}, "augment": {"name": "none"},
           "doctor": {"silence": ["no-pretrained-weights"]}, "trainer": {"verbose": 0}}


def _cfg(path, **data):
    return {**ML_BASE, "data": {"source": "csv", "path": str(path), "label_column": "labels", "image_size": 32,
                                "batch_size": 16, **data}}


@pytest.fixture(scope="session")
def shapes_table(tmp_path_factory):
    from tlkit.data.shapes import write_shapes_table

    return write_shapes_table(tmp_path_factory.mktemp("shapes"), num_images=160, size=32, seed=0)


def test_multi_label_rows_with_single_label_task_stop_before_tensorflow(shapes_table):
    """A softmax head would train on 'a;b' rows as if each set were one class: refused, naming task and the row,
    in a fresh interpreter that never imports TensorFlow."""
    code = (f"import sys\nfrom tlkit.config.store import as_train_config\nfrom tlkit.recipe.preflight import check_config\n"
            f"try:\n    check_config(as_train_config({_cfg(shapes_table)!r}))\nexcept Exception as e:\n"
            f"    print(type(e).__name__, e)\nprint('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("DataError") and "task=single_label" in out and "task=multilabel" in out
    assert "line 2: images/0000.png: label 'square;triangle'" in out
    assert out.strip().endswith("False")  # TensorFlow never started


def test_multilabel_config_rules(shapes_table):
    from tlkit.recipe.preflight import check_config

    assert as_train_config({**_cfg(shapes_table), "task": "multilabel"}).trainer.monitor.value == "val_map"
    with pytest.raises(ConfigError, match="task"):
        check_config(as_train_config({**ML_BASE, "data": {"source": "digits"}, "task": "multilabel"}))
    with pytest.raises(ConfigError, match="augment.cutmix"):
        check_config(as_train_config({**_cfg(shapes_table), "task": "multilabel", "augment": {"cutmix": 1.0}}))
    with pytest.raises(ConfigError, match="data.label_columns"):
        check_config(as_train_config(_cfg(shapes_table, label_columns=["a", "b"])))


def test_label_columns_layout_gives_the_same_multi_hot(shapes_table, tmp_path):
    """One 0/1 column per class reads as the ';' column does; a cell that is not 0/1 names its line."""
    from tlkit.data.multilabel_table import multi_hot
    from tlkit.data.scan import check_data_config
    from tlkit.config.schema import DataConfig

    rows = list(csv.DictReader(open(shapes_table)))
    wide = tmp_path / "wide.csv"
    with open(wide, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "square", "circle", "triangle"])
        for row in rows:
            writer.writerow([str(shapes_table.parent / row["image"])]
                            + [int(c in row["labels"].split(";")) for c in ("square", "circle", "triangle")])
    scan = check_data_config(DataConfig(source="csv", path=str(wide), label_columns=["square", "circle", "triangle"]),
                             "multilabel")
    sets = [s for s, files in scan.folders["data.path"].classes.items() for _ in files]
    hot = multi_hot(sets, ["square", "circle", "triangle"])
    expected = multi_hot([";".join(sorted(r["labels"].split(";"))) if r["labels"] else "" for r in rows],
                         ["square", "circle", "triangle"])
    assert sorted(map(tuple, hot)) == sorted(map(tuple, expected))
    text = wide.read_text().splitlines()
    text[3] = text[3].rsplit(",", 1)[0] + ",2"
    wide.write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"line 4: .*triangle='2' is not 0 or 1"):
        check_data_config(DataConfig(source="csv", path=str(wide), label_columns=["square", "circle", "triangle"]),
                          "multilabel")


def test_average_precision_matches_scikit_learn_and_thresholds_maximise_f1():
    from sklearn.metrics import average_precision_score, f1_score

    from tlkit.model.multilabel import f1_scores, mean_average_precision, tune_thresholds

    rng = np.random.default_rng(0)
    labels = (rng.random((200, 4)) < 0.3).astype(int)
    scores = np.round(np.clip(labels * 0.3 + rng.random((200, 4)) * 0.8, 0, 1), 2)  # rounded: ties too
    result = mean_average_precision(scores, labels)
    for c in range(4):
        assert result["per_class"][c] == pytest.approx(average_precision_score(labels[:, c], scores[:, c]))
    assert result["micro"] == pytest.approx(average_precision_score(labels.ravel(), scores.ravel()))
    thresholds = tune_thresholds(scores, labels)
    tuned = f1_scores(scores, labels, thresholds)["f1"]
    for c in range(4):
        best = max(f1_score(labels[:, c], scores[:, c] >= t) for t in np.unique(scores[:, c]))
        assert tuned[c] == pytest.approx(best)


@pytest.fixture(scope="session")
def multilabel_run(shapes_table, tmp_path_factory):
    from tlkit import train

    cfg = as_train_config({**_cfg(shapes_table, class_weight="auto"), "task": "multilabel", "optimizer": {"lr": 3e-3},
                           "schedule": {"name": "staged", "stages": [
                               {"name": "head", "train": "head", "epochs": 4, "patience": None, "warmup_epochs": 0},
                               {"name": "top", "train": "top:2", "epochs": 2, "lr_scale": 0.3, "patience": None,
                                "warmup_epochs": 0}]}})
    run_dir = tmp_path_factory.mktemp("ml_run")
    return run_dir, train(cfg, run_dir).metrics


def test_multilabel_run_end_to_end(multilabel_run, shapes_table):
    """Staged schedule on 0-3 planted shapes: model.keras ends in sigmoids and loads with plain Keras, thresholds.json
    is what predict applies, eval/ has per-class AP and the PR curves."""
    import keras

    from tlkit.tools.predict import predict

    run_dir, metrics = multilabel_run
    assert [s["name"] for s in metrics["stages"]] == ["head", "top"] and metrics["monitor"] == "val_map"
    positives = np.mean([float(c["positives"]) for c in json.loads((run_dir / "eval" / "report.json").read_text())[
        "splits"]["val"]["per_class"]]) / metrics["num_val"]
    assert metrics["val_map"] > positives + 0.1  # a random score's AP is the share of positives
    model = keras.models.load_model(run_dir / "model.keras")
    assert model.layers[-1].get_config()["activation"] == "sigmoid"
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    probabilities = np.asarray(model(images))
    assert probabilities.shape == (3, 3) and not np.allclose(probabilities.sum(axis=1), 1.0)
    saved = json.loads((run_dir / "thresholds.json").read_text())
    assert saved["class_names"] == metrics["class_names"] == ["circle", "square", "triangle"]
    files = [str(shapes_table.parent / "images" / f"{i:04d}.png") for i in range(6)]
    rows, _ = predict(run_dir, files, progress=False)
    for row in rows:
        expected = [n for n, p, t in zip(saved["class_names"], row["probabilities"], saved["thresholds"]) if p >= t]
        assert row["labels"] == expected
    report = json.loads((run_dir / "eval" / "report.json").read_text())["splits"]["val"]
    assert report["map"] == pytest.approx(metrics["val_map"])
    assert [c["class"] for c in report["per_class"]] == saved["class_names"]
    assert (run_dir / "eval" / "val_pr_curves.png").stat().st_size > 10_000
    findings = {f["id"] for f in metrics["doctor"]["findings"]}
    assert "label-cardinality" in findings and "label-format" not in findings


def test_a_multilabel_run_exports_to_tflite_with_its_thresholds(multilabel_run):
    """The TFLite file serves the sigmoids (parity with model.keras); its model card names the task and carries the
    thresholds a label needs, instead of promising softmax probabilities that sum to 1."""
    from tlkit.tools.export import export

    run_dir, metrics = multilabel_run
    path = export(run_dir, "tflite")
    card = json.loads((path.parent / "model_card.json").read_text())
    saved = json.loads((run_dir / "thresholds.json").read_text())
    assert card["task"] == "multilabel" and card["thresholds"] == dict(zip(saved["class_names"], saved["thresholds"]))
    assert "sigmoid" in card["output"]["meaning"] and "softmax" not in card["output"]["meaning"]
    assert card["verification"]["max_abs_diff"] <= 1e-4


class _Killed(BaseException):
    """Stands in for SIGKILL inside this process (BaseException: nothing catches it on the way)."""


def test_a_killed_multilabel_run_resumes_to_the_uninterrupted_result(shapes_table, tmp_path, monkeypatch):
    """Resume with task=multilabel: the run's best is tracked on val_map across the kill, and the resumed run ends
    where an uninterrupted one does (same mAP, same stages, the same thresholds.json)."""
    import tlkit.training.checkpoint as ckpt
    from tlkit import train

    def cfg():
        return as_train_config({**_cfg(shapes_table), "task": "multilabel", "optimizer": {"lr": 3e-3},
                                "trainer": {"verbose": 0, "deterministic": True, "checkpoint_every_s": 0},
                                "schedule": {"name": "staged", "stages": [
                                    {"name": "head", "train": "head", "epochs": 2, "patience": None,
                                     "warmup_epochs": 0},
                                    {"name": "top", "train": "top:1", "epochs": 1, "lr_scale": 0.3, "patience": None,
                                     "warmup_epochs": 0}]}})

    full = train(cfg(), tmp_path / "full").metrics

    def die_after_epoch_1(point, epoch):
        if (point, epoch) == ("epoch-end", 1):
            raise _Killed

    monkeypatch.setattr(ckpt, "maybe_fault", die_after_epoch_1)
    monkeypatch.setenv(ckpt.FAULT_ENV, "epoch-end:1")
    with pytest.raises(_Killed):
        train(cfg(), tmp_path / "partial")
    monkeypatch.undo()
    resumed_cfg = cfg()
    resumed_cfg.resume = str(tmp_path / "partial")
    resumed = train(resumed_cfg).metrics
    assert resumed["monitor"] == "val_map" and resumed["val_map"] == full["val_map"]
    assert resumed["stages"] == full["stages"] and resumed["best"] == full["best"]
    assert (json.loads((tmp_path / "partial" / "thresholds.json").read_text())
            == json.loads((tmp_path / "full" / "thresholds.json").read_text()))


def test_tta_on_a_multilabel_run_averages_the_sigmoids(multilabel_run, shapes_table):
    """tta= works for task=multilabel: the report's mAP is that of the averaged sigmoids, "tta" says how many label
    sets changed and what mAP was without it; mirror views stay out (the run trained without flips)."""
    from tlkit.tools.evaluate import evaluate_run, summary_text
    from tlkit.tools.predict import predict

    run_dir, metrics = multilabel_run
    plain = evaluate_run(run_dir, "val", write=False)
    report = evaluate_run(run_dir, "val", write=False, tta="4")
    tta = report["tta"]
    assert len(tta["views"]) == 4 and not any("flip" in view for view in tta["views"])
    assert report["map"] == pytest.approx(tta["map_with"]) and tta["map_without"] == pytest.approx(plain["map"])
    assert 0 <= tta["changed_predictions"] <= report["num_images"] and "TTA tta=4" in summary_text(report, "val")
    mirrored = evaluate_run(run_dir, "val", write=False, tta="flip")
    assert mirrored["tta"]["views"] == ["identity"] and "flip" in mirrored["tta"]["skipped"]
    assert mirrored["map"] == pytest.approx(plain["map"]) and "left out flip" in summary_text(mirrored, "val")
    files = [str(shapes_table.parent / "images" / f"{i:04d}.png") for i in range(4)]
    rows, _ = predict(run_dir, files, progress=False, tta="crops")
    assert all(isinstance(row["without_tta"], list) and isinstance(row["labels"], list) for row in rows)
