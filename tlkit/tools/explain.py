"""Why the model decided: `tlkit explain run=RUN_DIR inputs=PATH [block=NAME] [class=NAME] [output=DIR]`.

    explain_run(run_dir, inputs) -> ExplainResult, and writes into RUN_DIR/explain/ (or output=DIR):
      NNN_<file name>.png   the image, its Grad-CAM heat map and the two overlaid, titled with the prediction
      explain.json          per image: path, predicted class and probability, explained class, picture file

Images are read exactly as `tlkit predict` reads them (tlkit.tools.predict: same decoding and resize, RGB 0-255), and the
heat map is computed by tlkit.tools.gradcam (tlkit.tools.gradcam_hub for a KerasHub backbone) through the model's own
preprocessing. The overlay is drawn on the image at its own size: the model sees the whole image resized (no crop), so
the map stretches back onto it.
`wrong_image_overlays` gives the eval report's confidently-wrong grid its heat-map row (tlkit.tools.evaluate).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

import tlkit.training.rundir as rundir
from tlkit.backbones.spec import BackboneSpec
from tlkit.tools.gradcam import COLORMAP, ExplainError, GradCam, overlay, resize_map, spec_of
from tlkit.tools.gradcam_hub import check_block, grad_cam

log = logging.getLogger("tlkit.explain")

EXPLAIN_FILE = "explain.json"
PANEL_INCHES = 3.2  # each of the three panels of an overlay picture


@dataclass
class Explanation:
    path: str
    predicted: str
    probability: float  # of the predicted class
    explained: str  # the class whose evidence the heat map shows
    explained_probability: float
    file: str  # the picture, relative to the output folder
    heatmap: np.ndarray = field(repr=False)  # float32 [H, W] in 0..1 at the model's input size


@dataclass
class ExplainResult:
    output: Path
    method: str  # GradCam.describe()
    explanations: List[Explanation]
    failures: list  # tlkit.tools.predict.Failure: files that could not be read


def run_spec(run_dir: Path) -> Optional[BackboneSpec]:
    """The run's backbone spec from its saved config, as the trainer reads it (tlkit.config.validate.backbone_spec: a
    KerasHub preset's from its files; no TensorFlow); None when the folder has no config (then the model's own name
    says the backbone)."""
    from tlkit.config.validate import backbone_spec

    try:
        cfg = rundir.load_config(run_dir)
    except Exception as error:
        log.debug("no backbone from the run's config (%s); using the model's name", error)
        return None
    return backbone_spec(cfg)


def explain_run(run_dir, inputs, block: Optional[str] = None, class_name: Optional[str] = None,
                output=None, batch_size: int = 16) -> ExplainResult:
    """Grad-CAM pictures of every readable image in `inputs` (files, folders, globs: as tlkit predict).

    run_dir: a run directory (model.keras, config.yaml, metrics.json). block: the backbone block whose feature map is
    explained (a name from `tlkit backbones`), None: tlkit.tools.gradcam's automatic choice. class_name: explain this class
    in every image, None: each image's predicted class. output: the folder, default RUN_DIR/explain/.
    """
    from tlkit.tools.predict import list_inputs, load_model_and_classes

    run_dir = Path(run_dir)
    spec = run_spec(run_dir)
    names = rundir.read_metrics(run_dir).get("class_names")
    # Checked before TensorFlow loads the model: a typo fails at once, naming what is allowed.
    if names:
        _class_index(class_name, names)
    if spec is not None:
        check_block(spec, block)
    paths = list_inputs(inputs)
    model, names = load_model_and_classes(run_dir)
    cam = grad_cam(model, spec or spec_of(model), block)
    if min(cam.feature_shape) < 2:
        log.warning("%s: a map of one cell says nothing about where; choose an earlier block (block=NAME) or larger "
                    "images", cam.describe())
    classes = None if class_name is None else [_class_index(class_name, names)]
    out = Path(output) if output is not None else run_dir / rundir.EXPLAIN_DIR
    out.mkdir(parents=True, exist_ok=True)
    explanations, failures = [], []
    for start in range(0, len(paths), batch_size):
        chunk_explanations, chunk_failures = _explain_chunk(cam, paths[start:start + batch_size], start, names,
                                                            classes, out)
        explanations += chunk_explanations
        failures += chunk_failures
    result = ExplainResult(out, cam.describe(), explanations, failures)
    _write_json(result, run_dir, names)
    return result


def _class_index(class_name: Optional[str], names: Sequence[str]) -> Optional[int]:
    if class_name is None:
        return None
    if class_name not in names:
        raise ExplainError(f"class={class_name!r} is not a class of this run; its classes are {', '.join(names)}")
    return list(names).index(class_name)


def _explain_chunk(cam: GradCam, paths: Sequence[str], first: int, names: Sequence[str], classes, out: Path):
    from tlkit.tools.predict import read_images, resize_like_training

    # Not predict.load_images: the pictures are drawn on each image at its own size, so the originals are kept
    images, good, failures = read_images(paths)
    if not images:
        return [], failures
    batch = resize_like_training(images, *cam.input_shape)
    explained = None if classes is None else classes * len(images)
    maps, probabilities = cam.heatmaps(batch, explained)
    explanations = []
    for offset, (path, image, heat, probs) in enumerate(zip(good, images, maps, probabilities)):
        predicted = int(np.argmax(probs))
        target = predicted if classes is None else classes[0]
        file = f"{first + paths.index(path):03d}_{Path(path).stem}.png"  # numbered: names may repeat across folders
        explanation = Explanation(path, names[predicted], float(probs[predicted]), names[target],
                                  float(probs[target]), file, heat)
        _save_picture(image, heat, explanation, cam.describe(), out / file)
        explanations.append(explanation)
    return explanations, failures


def _save_picture(image: np.ndarray, heatmap: np.ndarray, explanation: Explanation, method: str, path: Path) -> None:
    """Three panels, left to right: the image, the heat map (with its scale), the overlay. Axes at fixed places
    (no layout engine, no tight bounding box): drawing stays a fraction of a second per picture."""
    from tlkit.plots import pyplot, short_label

    plt = pyplot()
    height, width = image.shape[:2]
    panel_h = PANEL_INCHES * min(max(height / max(width, 1), 0.4), 2.0)
    title_h, bar_w, gap = 0.6, 0.9, 0.15
    fig_w, fig_h = 3 * PANEL_INCHES + bar_w + 4 * gap, panel_h + title_h + 0.35
    figure = plt.figure(figsize=(fig_w, fig_h))

    def rect(left, width_in):  # inches -> figure fractions, panels on one line under the title
        return [left / fig_w, 0.1 / fig_h, width_in / fig_w, panel_h / fig_h]

    lefts = [gap, 2 * gap + PANEL_INCHES, 3 * gap + 2 * PANEL_INCHES + bar_w]
    smooth = None if min(height, width) >= 96 else "nearest"  # small images: show their pixels, not a blur
    panels = [(image, "image"), (None, "Grad-CAM heat map"),
              (overlay(image, heatmap), f"evidence for {short_label(explanation.explained, 22)}")]
    for left, (picture, title) in zip(lefts, panels):
        axes = figure.add_axes(rect(left, PANEL_INCHES))
        if picture is None:
            shown = axes.imshow(resize_map(heatmap, height, width), cmap=COLORMAP, vmin=0, vmax=1, aspect="auto")
        else:
            axes.imshow(picture, interpolation=smooth, aspect="auto")
        axes.set_title(title, fontsize=10)
        axes.axis("off")
    bar = figure.add_axes(rect(lefts[1] + PANEL_INCHES + 0.08, 0.15))
    figure.colorbar(shown, cax=bar).set_label("evidence for the class (0-1)", fontsize=8)
    figure.suptitle(f"{short_label(Path(explanation.path).name, 40)}: predicted "
                    f"{short_label(explanation.predicted, 22)} ({explanation.probability:.2f})\n{method}",
                    fontsize=10, y=1 - 0.08 / fig_h, va="top")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _write_json(result: ExplainResult, run_dir: Path, names: Sequence[str]) -> Path:
    document = {
        "run_dir": str(run_dir.resolve()), "method": result.method, "class_names": list(names),
        "images": [{"path": e.path, "file": e.file, "predicted": e.predicted, "probability": e.probability,
                    "explained": e.explained, "explained_probability": e.explained_probability}
                   for e in result.explanations],
        "failures": [{"path": f.path, "error": f.error} for f in result.failures],
    }
    path = result.output / EXPLAIN_FILE
    text = json.dumps(document, indent=2) + "\n"
    rundir.atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path


def wrong_image_overlays(model, images: np.ndarray, predicted: Sequence[int],
                         spec: Optional[BackboneSpec] = None) -> Optional[np.ndarray]:
    """uint8 [k, H, W, 3]: each image with the Grad-CAM of the class it was wrongly given (the eval report's
    confidently-wrong grid). spec: the model's backbone spec (the run's; None: the model's name says it, which a
    KerasHub backbone's does not). None, with the reason logged, when Grad-CAM does not apply: never fails a report."""
    if len(images) == 0:
        return None
    try:
        cam = grad_cam(model, spec or spec_of(model))
        maps, _ = cam.heatmaps(np.asarray(images, dtype=np.float32), list(predicted))
    except ExplainError as error:
        log.info("no heat maps in the confidently-wrong grid: %s", error)
        return None
    except Exception as error:  # a report must survive an explanation that breaks
        log.warning("no heat maps in the confidently-wrong grid: %s: %s", type(error).__name__, error)
        return None
    return np.stack([overlay(image, heat) for image, heat in zip(images, maps)])
