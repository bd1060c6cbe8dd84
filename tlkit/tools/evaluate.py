"""Evaluation reports: what a person looks at after a run.

    evaluate_run(run_dir, split="val", data_overrides=None) -> report dict, and writes
    RUN_DIR/eval/report.json (one entry per split), SPLIT_confusion_matrix.png,
    SPLIT_confidently_wrong.png and training_curves.png; the same pictures go to
    TensorBoard (RUN_DIR/tensorboard/eval).

The trainer calls `evaluate_bundle` for its final metrics and `report_after_training` once model.keras is
saved (val, and test when there is one), both handed to it by tlkit.cli.runner (it imports no tool above it); `tlkit evaluate run=RUN_DIR [data.xxx=...]` does the same for a finished
run, optionally on other data (the overrides merge onto the run's saved config).
"""
from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

import tlkit.tools.multilabel_report as multilabel_report
import tlkit.training.rundir as rundir
from tlkit.fileio import read_json

log = logging.getLogger("tlkit.evaluate")

TOP_K = (1, 3, 5)
NUM_WRONG = 16  # images in the confidently-wrong grid
REPORT_FILE = "report.json"
CURVES_FILE = "training_curves.png"
SPLITS = ("val", "test")


@dataclass
class SplitEvaluation:
    report: dict  # JSON-ready
    wrong_images: np.ndarray  # uint8 [k, H, W, 3], the images of report["confidently_wrong"], same order
    probabilities: Optional[np.ndarray] = field(default=None, repr=False)  # [N, classes], the split's order
    labels: Optional[np.ndarray] = field(default=None, repr=False)  # [N]
    # uint8 [k, H, W, 3]: those images with the Grad-CAM of their (wrong) predicted class (tlkit.tools.explain); None
    # where Grad-CAM does not apply
    wrong_overlays: Optional[np.ndarray] = field(default=None, repr=False)


# --------------------------------------------------------------------------- metrics (numpy only)


def metrics_from_predictions(probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                             top_k: Sequence[int] = TOP_K) -> dict:
    """Accuracy, top-k, loss, per-class precision/recall/F1 and the confusion matrix."""
    from sklearn.metrics import precision_recall_fscore_support

    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n, num_classes = len(labels), len(class_names)
    predicted = probabilities.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    ranked = np.argsort(-probabilities, axis=1, kind="stable") if n else np.zeros((0, num_classes), dtype=np.int64)
    top = {str(k): float(np.mean(np.any(ranked[:, :k] == labels[:, None], axis=1))) if n else float("nan")
           for k in top_k if k == 1 or k < num_classes}
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    everything = list(range(num_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=everything, zero_division=0)
    per_class = [
        {"class": str(name), "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s),
         "predicted": int(matrix[:, i].sum())}
        for i, (name, p, r, f, s) in enumerate(zip(class_names, precision, recall, f1, support))
    ]
    weights = support / support.sum() if support.sum() else np.zeros_like(support, dtype=np.float64)
    true_probability = probabilities[np.arange(n), labels] if n else np.zeros(0)
    from tlkit.training.calibration import expected_calibration_error
    from tlkit.plots import normalize_rows

    return {
        "num_images": int(n),
        "accuracy": top.get("1", float("nan")),
        "top_k_accuracy": top,
        "loss": float(np.mean(-np.log(np.clip(true_probability, 1e-12, 1.0)))) if n else float("nan"),
        "ece": expected_calibration_error(probabilities, labels),  # tlkit.training.calibration: 0 = calibrated
        "macro_avg": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())},
        "weighted_avg": {"precision": float((precision * weights).sum()), "recall": float((recall * weights).sum()),
                         "f1": float((f1 * weights).sum())},
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),  # rows: true class, columns: predicted class (counts)
        "confusion_matrix_normalized": np.round(normalize_rows(matrix), 6).tolist(),  # rows sum to 1
        "most_confused": _most_confused(matrix, class_names),
    }


def _most_confused(matrix: np.ndarray, class_names: Sequence[str], limit: int = 10) -> list:
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    pairs = np.argwhere(off > 0)
    order = sorted(pairs.tolist(), key=lambda rc: -off[rc[0], rc[1]])[:limit]
    totals = matrix.sum(axis=1)
    return [{"true": str(class_names[r]), "predicted": str(class_names[c]), "count": int(off[r, c]),
             "share_of_true": float(off[r, c] / totals[r])} for r, c in order]


# --------------------------------------------------------------------------- running the model


EVAL_BATCH = 256  # images per model call when evaluating: few eager calls, whatever the training batch


def evaluate_split(model, dataset, class_names: Sequence[str], files: Optional[Sequence[str]] = None,
                   num_wrong: int = NUM_WRONG, predict: Optional[Callable] = None,
                   known: Optional[tuple] = None, spec=None) -> SplitEvaluation:
    """Run `model` (probabilities out) over a batched (images 0-255, labels) dataset.

    predict: images -> probabilities instead of the model's own call (tlkit.tools.tta.TTAPredictor); known:
    (probabilities, labels) the model outputs on this dataset in its order, already computed: used while the
    labels agree with the dataset's (the model runs only for the wrong-image overlays). spec: the model's backbone
    spec, for the overlays' Grad-CAM (None: the model's name says it; a KerasHub backbone's needs its run's)."""
    from tlkit.tools.predict import model_probabilities

    probabilities, labels = [], []
    wrong: list = []  # (confidence, index, predicted, true, image), best kept, most confident first
    seen = 0
    for images, batch_labels in dataset.unbatch().batch(EVAL_BATCH):
        images = np.asarray(images)
        batch_labels = np.asarray(batch_labels).astype(np.int64)
        known = known if known is None or _agrees(known[1], seen, batch_labels) else None
        probs = (known[0][seen:seen + len(batch_labels)] if known is not None else
                 predict(images) if predict is not None else model_probabilities(model, images))
        predicted = probs.argmax(axis=1)
        for j in np.flatnonzero(predicted != batch_labels):
            wrong.append((float(probs[j, predicted[j]]), seen + int(j), int(predicted[j]), int(batch_labels[j]),
                          np.clip(np.round(np.nan_to_num(images[j])), 0, 255).astype(np.uint8)))
        if len(wrong) > num_wrong:
            wrong = sorted(wrong, key=lambda w: (-w[0], w[1]))[:num_wrong]
        probabilities.append(probs)
        labels.append(batch_labels)
        seen += len(batch_labels)
    num_classes = len(class_names)
    probabilities = np.concatenate(probabilities) if probabilities else np.zeros((0, num_classes))
    labels = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    report = metrics_from_predictions(probabilities, labels, class_names)
    wrong = sorted(wrong, key=lambda w: (-w[0], w[1]))[:num_wrong]
    report["confidently_wrong"] = [
        {"index": index, "path": files[index] if files is not None and index < len(files) else None,
         "true": str(class_names[true]), "predicted": str(class_names[pred]), "confidence": confidence}
        for confidence, index, pred, true, _ in wrong
    ]
    images = np.stack([w[4] for w in wrong]) if wrong else np.zeros((0, 1, 1, 3), dtype=np.uint8)
    from tlkit.tools.explain import wrong_image_overlays

    overlays = wrong_image_overlays(model, images, [w[2] for w in wrong], spec)
    return SplitEvaluation(report=report, wrong_images=images, probabilities=probabilities, labels=labels,
                           wrong_overlays=overlays)


def _agrees(known_labels: np.ndarray, start: int, batch_labels: np.ndarray) -> bool:
    """Whether precomputed outputs line up with this batch (same labels at the same positions)."""
    part = known_labels[start:start + len(batch_labels)]
    if len(part) == len(batch_labels) and np.array_equal(part, batch_labels):
        return True
    log.debug("precomputed outputs do not line up with the dataset at image %d: running the model", start)
    return False


def _normalize_overrides(data_overrides: Optional[Mapping]) -> dict:
    return {(key if str(key).startswith("data.") else f"data.{key}"): value
            for key, value in dict(data_overrides or {}).items()}


def load_split(run_dir: Path, split: str, data_overrides: Optional[Mapping], image_size: int):
    """(dataset, class_names, files) of `split`, rebuilt from the run's config (+ overrides)."""
    from tlkit.data import load_data
    from tlkit.errors import DataError

    if split not in SPLITS:
        raise DataError(f"split={split!r}: expected one of {list(SPLITS)}")
    cfg = rundir.load_config(run_dir, **_normalize_overrides(data_overrides))
    data = load_data(cfg.data, None, image_size, cfg.seed, cfg.trainer.memory_budget_gb, task=cfg.task)
    if split == "test" and data.test is None:
        raise DataError(f"the run {str(run_dir)!r} has no test set; give one with data.test_dir=/path/to/test")
    dataset = data.val if split == "val" else data.test
    return dataset, data.class_names, data.val_files if split == "val" else data.test_files


def evaluate_run(run_dir: str | Path, split: str = "val", data_overrides: Optional[Mapping] = None,
                 output: str | Path | None = None, write: bool = True, tta: Optional[str] = None) -> dict:
    """Evaluate RUN_DIR/model.keras on `split` ("val" or "test") and write the report files.

    `data_overrides` (e.g. {"data.test_dir": "/new/test"}) merge onto the run's saved
    config. `tta`: flip, crops or N (tlkit.tools.tta; mirror views only where the run's flip decision allows them): the
    report then holds TTA's metrics and, under "tta", what it changed. Returns the split's report (JSON-ready dict).
    """
    from tlkit.model.load import load_model
    from tlkit.tools.predict import model_probabilities
    from tlkit.tools.tta import TTAPredictor, plan_tta

    run_dir = Path(run_dir)
    model = load_model(run_dir / rundir.MODEL_FILE)
    image_size = int(model.input_shape[1])
    dataset, data_class_names, files = load_split(run_dir, split, data_overrides, image_size)
    class_names = rundir.read_metrics(run_dir).get("class_names") or data_class_names
    _check_class_names(class_names, data_class_names, model)
    plan = plan_tta(tta, run_dir)  # mirror views only where the run judged flips label-safe
    predictor = TTAPredictor(lambda images: model_probabilities(model, images), plan) if plan else None
    if multilabel_report.is_multilabel_run(run_dir):  # AP per class, PR curves; TTA averages the sigmoids
        evaluation = multilabel_report.evaluate_run(run_dir, model, dataset, class_names, split, predictor)
        evaluation.report["data_overrides"] = _normalize_overrides(data_overrides)
        if write:
            multilabel_report.write_report(run_dir, {split: evaluation}, output=output)
        return evaluation.report
    evaluation = evaluate_split(model, dataset, class_names, files, predict=predictor, spec=_heat_map_spec(run_dir))
    if predictor is not None:
        evaluation.report["tta"] = predictor.summary(evaluation.probabilities, evaluation.labels)
    evaluation.report["data_overrides"] = _normalize_overrides(data_overrides)
    if write:
        write_report(run_dir, {split: evaluation}, output=output)
    return evaluation.report


def _heat_map_spec(run_dir: Path):
    """The run's backbone spec for the heat maps (tlkit.tools.explain.run_spec), or None with the reason logged: a
    KerasHub preset gone since training costs the heat maps, not the evaluation (model.keras holds its weights)."""
    from tlkit.errors import TlkitError
    from tlkit.tools.explain import run_spec

    try:
        return run_spec(run_dir)
    except TlkitError as error:
        log.info("no backbone spec from the run's config for the heat maps: %s", error)
        return None


def _check_class_names(run_names: Sequence[str], data_names: Sequence[str], model) -> None:
    from tlkit.errors import DataError

    if list(run_names) != list(data_names):
        raise DataError(f"the data's classes {list(data_names)} differ from the run's {list(run_names)}: the model's "
                        "outputs would be read as the wrong classes; use folders with the run's class names")
    if int(model.output_shape[-1]) != len(run_names):
        raise DataError(f"the model has {model.output_shape[-1]} outputs but the run names {len(run_names)} classes")


# --------------------------------------------------------------------------- writing


def write_report(run_dir: str | Path, evaluations: Mapping[str, SplitEvaluation], output: str | Path | None = None,
                 tensorboard: bool = True) -> Path:
    """report.json (merged with the splits already there), the PNGs and the TensorBoard images."""
    import tlkit.plots as plots

    run_dir = Path(run_dir)
    out = Path(output) if output is not None else run_dir / rundir.EVAL_DIR
    out.mkdir(parents=True, exist_ok=True)
    metrics = rundir.read_metrics(run_dir)
    pictures = {}
    for split, evaluation in evaluations.items():
        report = evaluation.report
        class_names = [c["class"] for c in report["per_class"]]
        files = {"confusion_matrix": f"{split}_confusion_matrix.png",
                 "confidently_wrong": f"{split}_confidently_wrong.png"}
        figure = plots.confusion_matrix_figure(np.array(report["confusion_matrix"]), class_names,
                                               title=f"Confusion matrix ({split})")
        pictures[f"{split}/confusion_matrix"] = plots.save(figure, out / files["confusion_matrix"])
        wrong = report["confidently_wrong"]
        figure = plots.confidently_wrong_figure(
            evaluation.wrong_images, [w["true"] for w in wrong], [w["predicted"] for w in wrong],
            [w["confidence"] for w in wrong], title=f"Most confidently wrong ({split}, {len(wrong)} shown)",
            overlays=evaluation.wrong_overlays)
        pictures[f"{split}/confidently_wrong"] = plots.save(figure, out / files["confidently_wrong"])
        report["files"] = files
    history = _read_history(run_dir / rundir.HISTORY_FILE)
    if history:
        stage_names = [s.get("name", "") for s in metrics.get("stages", [])]
        pictures["training_curves"] = plots.save(plots.training_curves_figure(history, stage_names), out / CURVES_FILE)

    path = out / REPORT_FILE
    document = read_json(path, unreadable_ok=True)
    class_names = metrics.get("class_names")
    if document.get("class_names") != class_names:
        document = {}  # a report from another model: start afresh
    document.update({"run_dir": str(run_dir.resolve()), "model": rundir.MODEL_FILE, "class_names": class_names,
                     "training_curves": CURVES_FILE if history else None})
    splits = document.setdefault("splits", {})
    for split, evaluation in evaluations.items():
        splits[split] = {"split": split, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **evaluation.report}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, allow_nan=True) + "\n")
    tmp.replace(path)
    if tensorboard:
        _to_tensorboard(run_dir / rundir.TENSORBOARD_DIR / "eval", pictures, step=int(metrics.get("epochs") or 0))
    return path


def _to_tensorboard(logdir: Path, pictures: Mapping[str, Path], step: int) -> None:
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        for name, path in pictures.items():
            image = tf.io.decode_png(tf.io.read_file(str(path)), channels=3)
            tf.summary.image(name, image[None], step=step)
    writer.flush()
    writer.close()


def _read_history(path: Path) -> list:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f) if row.get("epoch") not in (None, "")]


def evaluate_bundle(model, data, known: Optional[Mapping] = None, spec=None) -> dict:
    """{"val": SplitEvaluation, "test": ...} of `model` (probabilities out) on a DataBundle's splits: one pass
    each, what the trainer's final metrics and the report after training both come from. known: {split:
    (probabilities, labels)} of the model, already computed (the calibration's logits / T), or None. spec: the
    run's backbone spec (the heat maps' blocks), None: the model's name says it."""
    if getattr(data, "multilabel", False):
        return multilabel_report.evaluate_bundle(model, data)
    known = known or {}
    evaluations = {"val": evaluate_split(model, data.val, data.class_names, data.val_files, known=known.get("val"),
                                         spec=spec)}
    if data.test is not None:
        evaluations["test"] = evaluate_split(model, data.test, data.class_names, data.test_files,
                                             known=known.get("test"), spec=spec)
    return evaluations


def report_after_training(run_dir: str | Path, evaluations: Mapping[str, SplitEvaluation]) -> Optional[Path]:
    """The trainer's call: write the val (and test) reports of `evaluate_bundle`; never raises."""
    started = time.time()
    multilabel = any(e.report.get("task") == "multilabel" for e in evaluations.values())
    try:
        path = (multilabel_report.write_report if multilabel else write_report)(run_dir, evaluations)
    except Exception as error:  # a plotting or disk problem must never lose a finished run
        log.warning("could not write the evaluation report in %s: %s: %s (the trained model and metrics.json are "
                    "saved; retry with `tlkit evaluate run=%s`)", Path(run_dir) / rundir.EVAL_DIR,
                    type(error).__name__, error, run_dir)
        return None
    summary = ", ".join(f"{split} accuracy {e.report['accuracy']:.4f}" for split, e in evaluations.items())
    log.info("evaluation report: %s (%s, %.0fs)", path, summary, time.time() - started)
    return path


def summary_text(report: dict, split: str, worst: int = 5) -> str:
    """A few lines for the console."""
    if report.get("task") == "multilabel":
        return multilabel_report.summary_text(report, split, worst)
    top = ", ".join(f"top-{k} {v:.4f}" for k, v in report["top_k_accuracy"].items() if k != "1")
    lines = [f"{split}: {report['num_images']} images, accuracy {report['accuracy']:.4f}"
             + (f", {top}" if top else "") + f", macro F1 {report['macro_avg']['f1']:.4f}, loss {report['loss']:.4f}"]
    classes = sorted(report["per_class"], key=lambda c: (c["f1"], c["class"]))[:worst]
    if classes:
        lines.append("  lowest F1: " + ", ".join(f"{c['class']} {c['f1']:.2f}" for c in classes))
    for pair in report["most_confused"][:3]:
        lines.append(f"  {pair['true']} -> {pair['predicted']}: {pair['count']} "
                     f"({pair['share_of_true']:.0%} of {pair['true']})")
    if report.get("tta"):
        from tlkit.tools.tta import summary_line

        lines.append("  " + summary_line(report["tta"]))
    return "\n".join(lines)
