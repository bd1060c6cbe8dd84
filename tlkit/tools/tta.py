"""Test-time augmentation (TTA): probabilities averaged over views of each image that keep its label.

    tlkit evaluate run=RUN_DIR tta=flip|crops|N        tlkit predict run=RUN_DIR inputs=... tta=flip|crops|N

Views, in this order: the image itself, its mirror image (left-right flip), a centre crop, the four corner
crops, then the mirror of each crop. A crop keeps CROP_FRACTION of each side and is resized back to the model's
input size (bilinear, rounded to 0-255 levels like the training pipeline). tta=flip: the image and its mirror;
tta=crops: the image, the centre and the four corner crops; tta=N: the first N views of the order above.

Label safety: a mirror view is used only when the run trained on mirrored images: augment.flip=true in
RUN_DIR/config.yaml, which holds the recipe's flip probe decision (tlkit.recipe.measured.decide_flip; its reason is in
metrics.json auto_recipe.decisions). Where the probe found that mirroring changes what the images show (digits,
text, left/right classes), or the run says nothing, mirror views are left out and the report says why. Crops are
always allowed: they only zoom in by 1 / CROP_FRACTION.

The report ("tta" in eval/report.json, or the predict summary) says what TTA changed: the views used and left
out, how many top-1 predictions moved, and (with labels) accuracy, loss and ECE without and with TTA, and how
many images it fixed and broke. NumPy and Keras ops only (backend-neutral).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from tlkit.errors import ConfigError

CROP_FRACTION = 0.875  # the side a crop keeps: ImageNet evaluation's 224 of 256
CROPS = ("center_crop", "crop_top_left", "crop_top_right", "crop_bottom_left", "crop_bottom_right")
VIEWS = ("identity", "flip", *CROPS, *(f"flip_{crop}" for crop in CROPS))
NAMED = {"flip": ("identity", "flip"), "crops": ("identity", *CROPS)}
OFF = ("none", "off", "null", "false", "0")
ALLOWED = f"flip, crops, a number of views N between 1 and {len(VIEWS)}, or none"


@dataclass
class TTAPlan:
    request: str  # what was asked: flip, crops or N
    views: List[str]  # the views used, identity first
    skipped: Dict[str, str] = field(default_factory=dict)  # view -> why it is left out
    flip_safe: bool = False
    flip_reason: str = ""

    def to_dict(self) -> dict:
        return {"request": self.request, "views": list(self.views), "skipped": dict(self.skipped),
                "flip_safe": self.flip_safe, "flip_reason": self.flip_reason}


# --------------------------------------------------------------------------- which views


def flip_safety(run_dir) -> tuple[bool, str]:
    """(whether mirrored images keep their labels for this run, why): from RUN_DIR/config.yaml's augment.flip (the
    flip probe's decision, or the config's), with the probe's reason from metrics.json when it decided."""
    from omegaconf import OmegaConf

    import tlkit.training.rundir as rundir

    if run_dir is None:
        return False, "no run directory says whether mirroring keeps the labels"
    run_dir = Path(run_dir)
    config = next((run_dir / name for name in (rundir.CONFIG_FILE, rundir.HYDRA_CONFIG_FILE)
                   if (run_dir / name).is_file()), None)
    flip = OmegaConf.select(OmegaConf.load(config), "augment.flip") if config is not None else None
    decisions = ((rundir.read_metrics(run_dir).get("auto_recipe") or {}).get("decisions") or [])
    reasons = [d.get("reason") for d in decisions if d.get("name") == "flip" and d.get("reason")]
    why = f" ({reasons[-1]})" if reasons else ""
    if flip is True:
        return True, f"the run trained on mirrored images: augment.flip=true{why}"
    if flip is False:
        return False, f"the run did not train on mirrored images: augment.flip=false{why}"
    return False, f"{run_dir} does not record augment.flip, so mirroring may change the labels"


def plan_tta(request, run_dir=None, flip_safe: Optional[bool] = None, flip_reason: str = "") -> Optional[TTAPlan]:
    """The views for `request` (flip, crops, N; none/None: no TTA, returns None), mirror views only when safe.

    run_dir: the run whose flip decision counts (flip_safety); flip_safe: that decision given directly instead."""
    if request is None or str(request).strip().lower() in OFF:
        return None
    text = str(request).strip().lower()
    if flip_safe is None:
        flip_safe, flip_reason = flip_safety(run_dir)
    unsafe = "a mirror view: " + flip_reason
    if text in NAMED:
        wanted = list(NAMED[text])
    elif text.isdigit() and 1 <= int(text) <= len(VIEWS):
        wanted = [view for view in VIEWS if flip_safe or "flip" not in view][:int(text)]
    else:
        raise ConfigError("tta", request, ALLOWED, hint="tta=flip averages each image with its mirror image")
    views = [view for view in wanted if flip_safe or "flip" not in view]
    skipped = {view: unsafe for view in wanted if view not in views}
    if text.isdigit() and len(views) < int(text):
        skipped["more views"] = (f"{text} asked, {len(views)} label-safe views exist "
                                 + ("" if flip_safe else "without mirror images"))
    return TTAPlan(text, views, skipped, bool(flip_safe), flip_reason)


# --------------------------------------------------------------------------- the views themselves


def _crop_box(view: str, height: int, width: int) -> tuple[int, int, int, int]:
    h, w = max(1, int(round(height * CROP_FRACTION))), max(1, int(round(width * CROP_FRACTION)))
    top = 0 if "top" in view else height - h if "bottom" in view else (height - h) // 2
    left = 0 if "left" in view else width - w if "right" in view else (width - w) // 2
    return top, left, h, w


def view_images(images: np.ndarray, view: str) -> np.ndarray:
    """float32 [N, H, W, 3] (0-255) seen as `view` (one of VIEWS), at the same size."""
    import keras

    images = np.asarray(images, dtype=np.float32)
    if view.startswith("flip"):
        images = images[:, :, ::-1, :]
        view = view[len("flip_"):] if view != "flip" else "identity"
    if view == "identity":
        return np.ascontiguousarray(images)
    height, width = images.shape[1:3]
    top, left, h, w = _crop_box(view, height, width)
    crop = images[:, top:top + h, left:left + w, :]
    resized = keras.ops.image.resize(crop, (height, width), interpolation="bilinear", antialias=True)
    return np.round(np.clip(keras.ops.convert_to_numpy(resized), 0.0, 255.0)).astype(np.float32)


class TTAPredictor:
    """images -> probabilities averaged over the plan's views; keeps the plain (identity) probabilities of every
    batch, in order, so that `summary` can say what TTA changed."""

    def __init__(self, probabilities: Callable[[np.ndarray], np.ndarray], plan: TTAPlan):
        self.probabilities, self.plan, self.plain = probabilities, plan, []

    def __call__(self, images: np.ndarray) -> np.ndarray:
        per_view = [np.asarray(self.probabilities(view_images(images, view)), dtype=np.float64)
                    for view in self.plan.views]
        self.plain.append(per_view[0])
        return np.mean(per_view, axis=0)

    def summary(self, averaged: np.ndarray, labels: Optional[np.ndarray] = None) -> dict:
        """What TTA changed for the images seen so far (`averaged`: their TTA probabilities, in order)."""
        from tlkit.training.calibration import expected_calibration_error, negative_log_likelihood

        plain = np.concatenate(self.plain) if self.plain else np.zeros_like(averaged)
        before, after = plain.argmax(axis=1), np.asarray(averaged).argmax(axis=1)
        out = {**self.plan.to_dict(), "num_images": int(len(after)),
               "changed_predictions": int((before != after).sum())}
        if labels is not None and len(labels):
            labels = np.asarray(labels, dtype=np.int64)
            out.update({
                "accuracy_without": float((before == labels).mean()), "accuracy_with": float((after == labels).mean()),
                "loss_without": negative_log_likelihood(plain, labels),
                "loss_with": negative_log_likelihood(averaged, labels),
                "ece_without": expected_calibration_error(plain, labels),
                "ece_with": expected_calibration_error(averaged, labels),
                "fixed": int(((before != labels) & (after == labels)).sum()),
                "broken": int(((before == labels) & (after != labels)).sum()),
            })
        return out


def summary_line(summary: dict) -> str:
    """One line for the console: the views, what was left out, what changed."""
    text = (f"TTA tta={summary['request']}: {len(summary['views'])} view(s) ({', '.join(summary['views'])}); "
            f"{summary['changed_predictions']} of {summary['num_images']} top-1 predictions changed")
    if "accuracy_with" in summary:
        text += (f" ({summary['fixed']} fixed, {summary['broken']} broken): accuracy "
                 f"{summary['accuracy_without']:.4f} -> {summary['accuracy_with']:.4f}, "
                 f"loss {summary['loss_without']:.4f} -> {summary['loss_with']:.4f}")
    for view, why in summary["skipped"].items():
        text += f"\n  left out {view}: {why}"
    return text
