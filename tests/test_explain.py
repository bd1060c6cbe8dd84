"""Grad-CAM (`tlkit explain`, tlkit.tools.gradcam): the heat map points at what decided the class.

One run is trained once for the module (tlkit.train, VGG16 from random weights, 32 px) on images whose class is the
colour of one 8 x 8 patch (red or blue) at a random place; every image also has a green patch of the same size
elsewhere, in both classes, so "the most salient thing in the image" is not the answer. Held-out images with known
patch positions are then explained: the heat map must sit on the class patch, not on the distractor.
"""
import json

import numpy as np
import pytest
from PIL import Image

import tlkit
from tlkit import plots
from tlkit.cli.main import main as cli_main

SIZE, PATCH = 32, 8
COLOURS = {"blue": (40, 40, 230), "red": (230, 40, 40)}  # class names sort as the run's class order
DISTRACTOR = (40, 210, 40)
CHANCE = PATCH * PATCH / (SIZE * SIZE)  # the share of a uniform map that falls on the patch


def _patch_image(rng, colour):
    """uint8 [SIZE, SIZE, 3]: noisy grey, the class patch and the distractor (not overlapping); the patch's corner."""
    image = rng.uniform(70, 180) + rng.normal(0, 15, (SIZE, SIZE, 3))
    while True:
        patch, other = rng.integers(0, SIZE - PATCH + 1, 2), rng.integers(0, SIZE - PATCH + 1, 2)
        if np.abs(patch - other).max() >= PATCH:
            break
    image[patch[0]:patch[0] + PATCH, patch[1]:patch[1] + PATCH] = colour
    image[other[0]:other[0] + PATCH, other[1]:other[1] + PATCH] = DISTRACTOR
    return np.clip(np.round(image), 0, 255).astype(np.uint8), (tuple(patch), tuple(other))


@pytest.fixture(scope="module")
def patch_run(tmp_path_factory):
    """(run_dir, probe_dir, {probe file name: (class, patch corner, distractor corner)})."""
    rng = np.random.default_rng(0)
    data = tmp_path_factory.mktemp("patches")
    for i in range(256):
        name = list(COLOURS)[i % 2]
        (data / name).mkdir(exist_ok=True)
        Image.fromarray(_patch_image(rng, COLOURS[name])[0]).save(data / name / f"{i}.png")
    probes, boxes = tmp_path_factory.mktemp("probes"), {}
    for i in range(8):
        name = list(COLOURS)[i % 2]
        image, (patch, other) = _patch_image(rng, COLOURS[name])
        Image.fromarray(image).save(probes / f"probe_{i}.png")
        boxes[f"probe_{i}.png"] = (name, patch, other)
    run = tmp_path_factory.mktemp("run")
    cfg = tlkit.as_train_config({
        "backbone": {"name": "vgg16", "weights": None},
        "data": {"source": "folder", "path": str(data), "image_size": SIZE, "batch_size": 32, "val_split": 0.25},
        "augment": {"name": "none"}, "head": {"zero_init": False, "dropout": 0.0}, "optimizer": {"lr": 1.5e-4},
        "schedule": {"name": "custom", "stages": [{"name": "all", "train": "all", "epochs": 2, "patience": None,
                                                   "cosine": False}]},
        "trainer": {"verbose": 0}, "doctor": {"enabled": False, "monitor": False},
    })
    tlkit.train(cfg, run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val_accuracy"] >= 0.9, "the patch task did not train: nothing for Grad-CAM to explain"
    return run, probes, boxes


@pytest.fixture(scope="module")
def explained(patch_run, tmp_path_factory):
    from tlkit.tools.explain import explain_run

    run, probes, _ = patch_run
    return explain_run(run, probes, output=tmp_path_factory.mktemp("explained"))


def _box_share(heatmap, corner):
    top, left = corner
    return heatmap[top:top + PATCH, left:left + PATCH].sum() / max(heatmap.sum(), 1e-12)


def _peak_on(heatmap, corner, margin=0):
    top, left = corner
    y, x = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    return top - margin <= y < top + PATCH + margin and left - margin <= x < left + PATCH + margin


def test_the_heat_map_lies_on_the_deciding_patch(patch_run, explained):
    _, _, boxes = patch_run
    # At 32 px VGG16's blocks hand on maps of 16, 8, 4, 2 and 1 cells a side: the automatic block is the deepest
    # of at least 7 x 7.
    assert "block 'block2'" in explained.method and "8x8" in explained.method
    assert len(explained.explanations) == len(boxes) and not explained.failures
    on_patch, patch_share, distractor_share = [], [], []
    for explanation in explained.explanations:
        name, patch, other = boxes[explanation.path.rsplit("/", 1)[-1]]
        assert explanation.predicted == explanation.explained == name
        heat = explanation.heatmap
        assert heat.shape == (SIZE, SIZE) and 0.9 < heat.max() <= 1.0  # 1 at the centre of the peak cell
        on_patch.append(_peak_on(heat, patch))
        patch_share.append(_box_share(heat, patch))
        distractor_share.append(_box_share(heat, other))
    assert np.mean(on_patch) >= 7 / 8, on_patch
    assert np.mean(patch_share) >= 3 * CHANCE, patch_share  # measured: 0.31, 5 x chance
    # The green patch is as salient but decides nothing (the patches may touch: some heat spills over).
    assert all(p > d for p, d in zip(patch_share, distractor_share)), (patch_share, distractor_share)
    assert np.mean(patch_share) >= 3 * np.mean(distractor_share)


def test_a_coarser_block_still_points_at_the_patch(patch_run):
    from tlkit.tools.gradcam import GradCam, spec_of
    from tlkit.tools.predict import load_images

    run, probes, boxes = patch_run
    model = tlkit.load_model(run / "model.keras")
    cam = GradCam(model, spec_of(model), block="block3")
    assert cam.feature_shape == (4, 4)
    names = sorted(boxes)
    images, _, _ = load_images([str(probes / name) for name in names], SIZE, SIZE)
    maps, probabilities = cam.heatmaps(images)
    # 8-pixel cells: the peak may be the centre of the cell beside the patch's edge, half a cell out.
    assert np.mean([_peak_on(heat, boxes[name][1], margin=PATCH // 2) for heat, name in zip(maps, names)]) >= 7 / 8
    shares = [_box_share(heat, boxes[name][1]) for heat, name in zip(maps, names)]
    assert all(share > _box_share(heat, boxes[name][2]) for share, heat, name in zip(shares, maps, names))
    # The other class's evidence is not on the patch (it is nowhere: the patch speaks against it).
    other_maps, _ = cam.heatmaps(images, 1 - probabilities.argmax(axis=1))
    assert np.mean([_box_share(h, boxes[n][1]) for h, n in zip(other_maps, names)]) < np.mean(shares) / 2


def test_explain_cli_writes_pictures_and_a_listing(patch_run, tmp_path, capsys):
    run, probes, boxes = patch_run
    (tmp_path / "inputs").mkdir()
    for name in ("probe_0.png", "probe_1.png"):
        (tmp_path / "inputs" / name).write_bytes((probes / name).read_bytes())
    (tmp_path / "inputs" / "notes.png").write_text("not an image")
    assert cli_main(["explain", f"run={run}", f"inputs={tmp_path / 'inputs'}"]) == 0
    out = run / "explain"  # the default: inside the run directory
    captured = capsys.readouterr()
    assert "2 images, 1 unreadable" in captured.out and "not explained:" in captured.err
    listing = json.loads((out / "explain.json").read_text())
    assert [image["predicted"] for image in listing["images"]] == [boxes["probe_0.png"][0], boxes["probe_1.png"][0]]
    assert listing["failures"][0]["path"].endswith("notes.png")
    for image in listing["images"]:
        with Image.open(out / image["file"]) as picture:  # three panels side by side, wide enough to read
            assert picture.width > 2.5 * picture.height and picture.width >= 900


def test_explain_cli_refuses_unknown_block_and_class(patch_run, tmp_path, capsys):
    run, probes, _ = patch_run
    out = tmp_path / "refused"
    assert cli_main(["explain", f"run={run}", f"inputs={probes}", "block=conv4", f"output={out}"]) == 2
    assert "block='conv4' is not a block of backbone 'vgg16'; its blocks are block1" in capsys.readouterr().err
    assert cli_main(["explain", f"run={run}", f"inputs={probes}", "class=green", f"output={out}"]) == 2
    assert "class='green' is not a class of this run; its classes are blue, red" in capsys.readouterr().err
    assert not out.exists()  # refused before anything was written


def test_confidently_wrong_grid_gains_a_heat_map_row(patch_run):
    import tensorflow as tf

    from tlkit.tools.evaluate import evaluate_split
    from tlkit.tools.gradcam import GradCam, overlay, spec_of
    from tlkit.tools.predict import load_images

    run, probes, boxes = patch_run
    model = tlkit.load_model(run / "model.keras")
    names = sorted(boxes)[:4]
    images, _, _ = load_images([str(probes / name) for name in names], SIZE, SIZE)
    wrong_labels = np.array([1 - list(COLOURS).index(boxes[name][0]) for name in names])  # every one mislabelled
    evaluation = evaluate_split(model, tf.data.Dataset.from_tensor_slices((images, wrong_labels)).batch(4),
                                list(COLOURS))
    assert evaluation.wrong_overlays is not None and evaluation.wrong_overlays.shape == evaluation.wrong_images.shape
    wrong = evaluation.report["confidently_wrong"]
    assert [w["predicted"] for w in wrong] == [boxes[names[w["index"]]][0] for w in wrong]  # the labels are wrong
    # Each overlay shows the evidence for the class the model (wrongly) gave, not for the true one.
    cam = GradCam(model, spec_of(model))
    predicted = [list(COLOURS).index(w["predicted"]) for w in wrong]
    for classes, expected in ((predicted, True), ([1 - c for c in predicted], False)):
        maps, _ = cam.heatmaps(evaluation.wrong_images, classes)
        painted = np.stack([overlay(image, heat) for image, heat in zip(evaluation.wrong_images, maps)])
        assert (np.abs(painted.astype(int) - evaluation.wrong_overlays).max() <= 1) == expected
    figure = plots.confidently_wrong_figure(evaluation.wrong_images, [w["true"] for w in wrong],
                                            [w["predicted"] for w in wrong], [w["confidence"] for w in wrong],
                                            overlays=evaluation.wrong_overlays)
    shown = [axes for axes in figure.axes if axes.images]
    assert len(shown) == 2 * len(wrong)  # each image, and its heat map below it
    plots.pyplot().close(figure)


def test_grad_cam_refuses_a_model_tlkit_did_not_build():
    import keras

    from tlkit.tools.explain import wrong_image_overlays
    from tlkit.tools.gradcam import ExplainError, GradCam, spec_of

    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(2, 3), keras.layers.Flatten()],
                             name="mine")
    with pytest.raises(ExplainError, match="not a tlkit model .*tlkit_<backbone>"):
        spec_of(model)
    assert wrong_image_overlays(model, np.zeros((1, SIZE, SIZE, 3), np.uint8), [0]) is None  # a report still draws
    # A backbone that hands on vectors or tokens (a transformer) has no map to explain.
    image = keras.Input((SIZE, SIZE, 3))
    flat = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(4, 3), keras.layers.Flatten()],
                            name="backbone")
    tokens = keras.Model(image, keras.layers.Dense(2)(flat(keras.layers.Identity(name="preprocess")(image))),
                         name="tlkit_vgg16")
    with pytest.raises(ExplainError, match="backbone 'vgg16' hands on shape .* not an H x W x C feature map"):
        GradCam(tokens, spec_of(tokens))
