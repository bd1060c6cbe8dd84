"""Evaluation reports of a multi-label run (task=multilabel): what tlkit.tools.evaluate writes for one.

    evaluate_bundle(model, data)  val: probabilities -> per-class thresholds tuned for F1 (tlkit.model.multilabel), AP per
                                  class, mAP macro / micro, F1 at the thresholds; test: the same at val's thresholds
    write_report(run_dir, ...)    RUN_DIR/eval/report.json (merged with the splits there) and SPLIT_pr_curves.png:
                                  one precision-recall curve per class, its AP and threshold marked

The model is the saved one (sigmoids out); the numbers are NumPy (tlkit.model.multilabel), not Keras's PR-AUC.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

import tlkit.model.multilabel as ml
import tlkit.training.rundir as rundir
from tlkit.fileio import read_json

PR_CURVES_FILE = "{split}_pr_curves.png"
EVAL_BATCH = 256


@dataclass
class MultiLabelEvaluation:
    """One split's evaluation (what tlkit.tools.evaluate.SplitEvaluation is for single-label runs)."""

    report: dict  # JSON-ready
    probabilities: np.ndarray = field(repr=False)  # [N, classes] sigmoids, the split's order
    labels: np.ndarray = field(repr=False)  # [N, classes] 0/1


def split_probabilities(model, dataset, predict=None):
    """(probabilities [N, classes], multi-hot labels [N, classes]) of `model` over a batched (images, labels) split."""
    from tlkit.tools.predict import model_probabilities

    probabilities, labels = [], []
    for images, batch_labels in dataset.unbatch().batch(EVAL_BATCH):
        images = np.asarray(images)
        probabilities.append(predict(images) if predict is not None else model_probabilities(model, images))
        labels.append(np.asarray(batch_labels).astype(np.int64))
    return np.concatenate(probabilities), np.concatenate(labels)


def report_of(probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
              thresholds: Optional[Sequence[float]] = None) -> dict:
    """The split's report; `thresholds` None: tuned on these images (the validation split)."""
    tuned = thresholds is None
    thresholds = ml.tune_thresholds(probabilities, labels) if tuned else list(thresholds)
    aps = ml.mean_average_precision(probabilities, labels)
    f1 = ml.f1_scores(probabilities, labels, thresholds)
    per_class = [{"class": str(name), "ap": aps["per_class"][c], "threshold": thresholds[c],
                  "precision": f1["precision"][c], "recall": f1["recall"][c], "f1": f1["f1"][c],
                  "positives": int(labels[:, c].sum())} for c, name in enumerate(class_names)]
    return {"task": "multilabel", "num_images": int(len(labels)), "loss": ml.binary_cross_entropy(probabilities, labels),
            "accuracy": f1["exact_match"], "map": aps["macro"], "map_micro": aps["micro"],
            "macro_f1": f1["macro_f1"], "micro_f1": f1["micro_f1"],
            "label_cardinality": float(labels.sum(axis=1).mean()) if len(labels) else 0.0,
            "thresholds": [float(t) for t in thresholds], "thresholds_from": "this split" if tuned else "val",
            "per_class": per_class}


def evaluate_bundle(model, data) -> dict:
    """{"val": MultiLabelEvaluation, "test": ...} of `model` (sigmoids out), with thresholds tuned on val."""
    out = {}
    thresholds = None
    for split, dataset in (("val", data.val), ("test", data.test)):
        if dataset is None:
            continue
        probabilities, labels = split_probabilities(model, dataset)
        report = report_of(probabilities, labels, data.class_names, thresholds)
        thresholds = report["thresholds"]
        out[split] = MultiLabelEvaluation(report, probabilities, labels)
    return out


def pr_curves_figure(probabilities: np.ndarray, labels: np.ndarray, report: dict, title: str):
    """One precision-recall curve per class, the operating point at its threshold marked."""
    from tlkit.plots import pyplot

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 5))
    for c, entry in enumerate(report["per_class"]):
        if not labels[:, c].any():
            continue
        precision, recall, _ = ml.pr_curve(probabilities[:, c], labels[:, c])
        line, = axis.step(np.r_[0.0, recall], np.r_[precision[0], precision], where="post",
                          label=f"{entry['class']} (AP {entry['ap']:.3f})")
        axis.plot([entry["recall"]], [entry["precision"]], "o", color=line.get_color())
    axis.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02),
             title=f"{title}: mAP {report['map']:.3f} (micro {report['map_micro']:.3f}); dots: thresholds")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower left", fontsize="small")
    return figure


def write_report(run_dir: str | Path, evaluations: Mapping, output: str | Path | None = None) -> Path:
    """report.json (merged with the splits already there) and SPLIT_pr_curves.png in RUN_DIR/eval/ (or `output`)."""
    from tlkit.plots import save

    run_dir = Path(run_dir)
    out = Path(output) if output is not None else run_dir / rundir.EVAL_DIR
    out.mkdir(parents=True, exist_ok=True)
    class_names = rundir.read_metrics(run_dir).get("class_names")
    path = out / "report.json"
    document = read_json(path, unreadable_ok=True)
    if document.get("class_names") != class_names:
        document = {}
    document.update({"run_dir": str(run_dir.resolve()), "model": rundir.MODEL_FILE, "class_names": class_names,
                     "task": "multilabel"})
    for split, evaluation in evaluations.items():
        name = PR_CURVES_FILE.format(split=split)
        save(pr_curves_figure(evaluation.probabilities, evaluation.labels, evaluation.report,
                              f"PR curves ({split})"), out / name)
        document.setdefault("splits", {})[split] = {"split": split, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                    **evaluation.report, "files": {"pr_curves": name}}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, allow_nan=True) + "\n")
    tmp.replace(path)
    return path


def summary_text(report: dict, split: str, worst: int = 5) -> str:
    lines = [f"{split}: {report['num_images']} images, mAP {report['map']:.4f} (micro {report['map_micro']:.4f}), "
             f"macro F1 {report['macro_f1']:.4f} at the thresholds, exact match {report['accuracy']:.4f}, "
             f"loss {report['loss']:.4f}"]
    lowest = sorted((c for c in report["per_class"] if c["ap"] == c["ap"]), key=lambda c: (c["ap"], c["class"]))
    if lowest:
        lines.append("  lowest AP: " + ", ".join(f"{c['class']} {c['ap']:.2f}" for c in lowest[:worst]))
    tta = report.get("tta")
    if tta:
        lines.append(f"  TTA tta={tta['request']}: {len(tta['views'])} view(s) ({', '.join(tta['views'])}); label sets "
                     f"of {tta['changed_predictions']} of {tta['num_images']} images changed"
                     + (f": mAP {tta['map_without']:.4f} -> {tta['map_with']:.4f}" if "map_with" in tta else "")
                     + "".join(f"\n  left out {view}: {why}" for view, why in tta["skipped"].items()))
    return "\n".join(lines)


def evaluate_run(run_dir: Path, model, dataset, class_names: Sequence[str], split: str,
                 predictor=None) -> MultiLabelEvaluation:
    """`tlkit evaluate` of a multi-label run: at the run's thresholds (thresholds.json), or tuned on `split` when
    the run has none. predictor: a tlkit.tools.tta.TTAPredictor (sigmoids averaged over its views), or None; with one
    the report's "tta" says what it changed."""
    probabilities, labels = split_probabilities(model, dataset, predict=predictor)
    report = report_of(probabilities, labels, class_names, ml.read_thresholds(run_dir, class_names))
    if predictor is not None:
        plain = np.concatenate(predictor.plain) if predictor.plain else np.zeros_like(probabilities)
        report["tta"] = tta_summary(predictor.plan.to_dict(), plain, probabilities, labels, report["thresholds"])
    return MultiLabelEvaluation(report, probabilities, labels)


def tta_summary(plan: dict, plain: np.ndarray, averaged: np.ndarray, labels: np.ndarray, thresholds) -> dict:
    """What TTA changed on a multi-label split: images whose label set (at the thresholds) changed, and mAP and
    exact match without and with it (tlkit.tools.tta.TTAPredictor.summary is the single-label one)."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    before, after = plain >= thresholds, averaged >= thresholds
    out = {**plan, "num_images": int(len(labels)), "changed_predictions": int(np.any(before != after, axis=1).sum())}
    if len(labels):
        truth = np.asarray(labels).astype(bool)
        out.update({"map_without": ml.mean_average_precision(plain, labels)["macro"],
                    "map_with": ml.mean_average_precision(averaged, labels)["macro"],
                    "accuracy_without": float(np.all(before == truth, axis=1).mean()),
                    "accuracy_with": float(np.all(after == truth, axis=1).mean())})
    return out


def is_multilabel_run(run_dir: Path) -> bool:
    """The run trained with task=multilabel (its config.yaml says so)."""
    return ml.is_multilabel(rundir.load_config(run_dir))
