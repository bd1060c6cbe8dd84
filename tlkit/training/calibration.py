"""Calibration: temperature scaling fitted on the validation split after training (trainer.calibrate=true).

    result = calibrate(logits_model, data)      # T minimising the val NLL of softmax(logits / T)
    with_probabilities(model, result.temperature)   # tlkit.model.build: logits -> Rescaling(1/T) -> softmax

A network fine-tuned to a low training loss is usually over-confident: its top probability is higher than its
accuracy. One scalar T > 1 divides the logits and lowers every confidence without changing any prediction (the
argmax of logits / T is the argmax of the logits), so accuracy stays exactly the same while the expected
calibration error (ECE) and the log-loss (NLL) drop (Guo et al. 2017). T minimises the val NLL; a fit that runs
into a bound of TEMPERATURE_RANGE is not applied (no optimum: a separable val split, a model at chance). The saved
model.keras holds T as a core Keras Rescaling layer before its softmax: it still loads with plain keras.models.load_model.

The numbers (metrics.json "calibration"): ECE and NLL before and after, on val (where T was fitted: optimistic)
and, when the run has one, on test (an honest check); RUN_DIR/eval/reliability.png shows both.
NumPy for the fit; Keras only to run the model. Single-label only (softmax outputs).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("tlkit.train")

ECE_BINS = 15  # equal-width confidence bins (Guo et al. 2017)
TEMPERATURE_RANGE = (0.05, 20.0)  # the fit's bounds; a fit at a bound is reported (a val set it separates perfectly)
RELIABILITY_FILE = "reliability.png"


# --------------------------------------------------------------------------- measures (NumPy)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = np.asarray(logits, dtype=np.float64) / float(temperature)
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The mean -log p(true class): the cross-entropy loss of the probabilities."""
    labels = np.asarray(labels, dtype=np.int64)
    true = np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), labels]
    return float(np.mean(-np.log(np.clip(true, 1e-12, 1.0)))) if len(labels) else float("nan")


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Per equal-width confidence bin: its edges, images, mean confidence and accuracy (NaN when empty)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1) if len(probabilities) else np.zeros(0)
    correct = probabilities.argmax(axis=1) == np.asarray(labels) if len(probabilities) else np.zeros(0, bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(index, weights=correct.astype(np.float64), minlength=bins) / counts
    return {"edges": edges, "counts": counts, "confidence": mean_confidence, "accuracy": accuracy}


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the mean |accuracy - confidence| over the confidence bins, weighted by their images (0 = calibrated)."""
    table = reliability_bins(probabilities, labels, bins)
    counts = table["counts"]
    if not counts.sum():
        return float("nan")
    gaps = np.nan_to_num(np.abs(table["accuracy"] - table["confidence"]))
    return float((gaps * counts).sum() / counts.sum())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in TEMPERATURE_RANGE minimising the NLL of softmax(logits / T): the NLL is convex in 1/T, so unimodal in
    log T, and a golden-section search over log T finds it (to 1e-5 in log T)."""
    def loss(log_t: float) -> float:
        return negative_log_likelihood(softmax(logits, np.exp(log_t)), labels)

    low, high = np.log(TEMPERATURE_RANGE)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    while high - low > 1e-5:
        if loss_a <= loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    return float(np.exp((low + high) / 2.0))


# --------------------------------------------------------------------------- a run's calibration


@dataclass
class SplitLogits:
    logits: np.ndarray  # float64 [N, classes]
    labels: np.ndarray  # int64 [N]


@dataclass
class Calibration:
    fitted: float  # the T that minimises the val NLL
    splits: dict = field(default_factory=dict)  # "val" / "test" -> SplitLogits

    @property
    def at_bound(self) -> bool:
        return not TEMPERATURE_RANGE[0] * 1.01 < self.fitted < TEMPERATURE_RANGE[1] / 1.01

    @property
    def applied(self) -> bool:
        """Whether model.keras gets the fitted T: not when the fit ran into a bound of TEMPERATURE_RANGE (the NLL
        has no optimum there: a val split the model separates perfectly, or a model at chance)."""
        return not self.at_bound

    @property
    def temperature(self) -> float:
        """The T model.keras divides its logits by (1.0 when the fitted one was not applied)."""
        return self.fitted if self.applied else 1.0

    def measures(self, split: str) -> dict:
        """ECE and NLL of the raw softmax (before) and of the saved model (after) on `split`."""
        part = self.splits[split]
        before, after = softmax(part.logits), softmax(part.logits, self.temperature)
        return {"num_images": int(len(part.labels)),
                "ece_before": expected_calibration_error(before, part.labels),
                "ece_after": expected_calibration_error(after, part.labels),
                "nll_before": negative_log_likelihood(before, part.labels),
                "nll_after": negative_log_likelihood(after, part.labels)}

    def saved_probabilities(self) -> dict:
        """{split: (probabilities, labels)}: what model.keras (softmax of logits / T) outputs on each split, from the
        logits already computed here, so the evaluation after training need not run the model over them again."""
        return {split: (softmax(part.logits, self.temperature), part.labels) for split, part in self.splits.items()}

    def to_dict(self) -> dict:
        """metrics.json's "calibration": the method, T, the ECE bins, and ECE / NLL before and after per split."""
        return {"method": "temperature", "temperature": round(self.temperature, 6), "fitted_on": "val",
                "fitted_temperature": round(self.fitted, 6), "applied": self.applied, "at_bound": self.at_bound,
                "ece_bins": ECE_BINS,
                **{split: self.measures(split) for split in self.splits},
                "reliability_diagram": f"eval/{RELIABILITY_FILE}"}


def split_logits(model, dataset) -> SplitLogits:
    """The logits model's outputs on a batched (images 0-255, int labels) dataset, in inference mode."""
    import keras

    logits, labels = [], []
    for images, batch_labels in dataset:
        logits.append(np.asarray(keras.ops.convert_to_numpy(model(images, training=False)), dtype=np.float64))
        labels.append(np.asarray(batch_labels).astype(np.int64).reshape(-1))
    return SplitLogits(np.concatenate(logits), np.concatenate(labels))


def calibrate(model, data) -> Calibration | None:
    """T fitted on `data.val` (a DataBundle) for `model` (logits out); test logits kept for the honest check.
    None (and a warning) when a logit is NaN or infinite: there is nothing to scale."""
    splits = {"val": split_logits(model, data.val)}
    if data.test is not None:
        splits["test"] = split_logits(model, data.test)
    if not all(np.isfinite(part.logits).all() for part in splits.values()):
        log.warning("calibration skipped: the model's logits are NaN or infinite")
        return None
    result = Calibration(fit_temperature(splits["val"].logits, splits["val"].labels), splits)
    val = result.measures("val")
    log.info("calibration: temperature %.3f fitted on %d val images: ECE %.4f -> %.4f, NLL %.4f -> %.4f%s",
             result.temperature, val["num_images"], val["ece_before"], val["ece_after"], val["nll_before"],
             val["nll_after"], "".join(f"; {s}: ECE {m['ece_before']:.4f} -> {m['ece_after']:.4f}" for s, m in
                                       ((s, result.measures(s)) for s in splits if s != "val")))
    if result.at_bound:
        log.warning("calibration: the fitted temperature reached its bound (%.3g, range %g-%g): the val split is too "
                    "small or too easy to measure calibration on, or the model is at chance; model.keras keeps the "
                    "raw softmax (T = 1)", result.fitted, *TEMPERATURE_RANGE)
    return result


# --------------------------------------------------------------------------- the reliability diagram


def reliability_figure(result: Calibration):
    """Per split, accuracy against confidence by bin, before and after scaling; the diagonal is calibrated."""
    from tlkit.plots import pyplot

    plt = pyplot()
    splits = list(result.splits)
    figure, axes_row = plt.subplots(1, len(splits), figsize=(5.2 * len(splits), 5), squeeze=False,
                                    layout="constrained")
    for axes, split in zip(axes_row[0], splits):
        part, measures = result.splits[split], result.measures(split)
        axes.plot([0, 1], [0, 1], ":", color="grey", label="calibrated")
        for temperature, name, style in ((1.0, "before", "o-"), (result.temperature, "after", "s-")):
            table = reliability_bins(softmax(part.logits, temperature), part.labels)
            filled = table["counts"] > 0
            axes.plot(table["confidence"][filled], table["accuracy"][filled], style, markersize=4,
                      label=f"{name}: ECE {measures[f'ece_{name}']:.3f}, NLL {measures[f'nll_{name}']:.3f}")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1)
        axes.set_xlabel("confidence (top probability, bin mean)")
        axes.set_ylabel("accuracy in the bin")
        axes.set_title(f"{split}: {measures['num_images']} images, T = {result.temperature:.3f}"
                       + ("" if result.applied else f" (fitted {result.fitted:.3f}: not applied)")
                       + (" (fitted here)" if split == "val" else ""))
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", fontsize=8)
    figure.suptitle("Reliability diagram: temperature scaling")
    return figure


def write_reliability(folder: str | Path, result: Calibration) -> Path | None:
    """RUN_DIR/eval/reliability.png; a plotting problem is logged, never raised (the run is already saved)."""
    from tlkit.plots import save

    try:
        return save(reliability_figure(result), Path(folder) / RELIABILITY_FILE)
    except Exception as error:  # noqa: BLE001
        log.warning("could not write the reliability diagram in %s: %s: %s", folder, type(error).__name__, error)
        return None
