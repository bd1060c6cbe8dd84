"""Benchmark 3: tlkit's default staged recipe vs a plain script following the Keras transfer-learning guide.

    python scripts/bench_vs_keras_guide.py [--backbone resnet50] [--size 32] [--guide-epochs 20 10]

Offline, so the "pretrained" weights are made here: the backbone is first trained on digits
0-4, saved as a weights file, and both contenders transfer it to digits 5-9 (the same
train/val files, the same weights file, the same image size). The plain script is the
guide's recipe (keras.io/guides/transfer_learning): frozen base called with training=False,
GlobalAveragePooling, Dropout(0.2), a new head trained with Adam; then the whole base
unfrozen and fine-tuned with Adam 1e-5; no early stopping, no best-epoch restore.
tlkit runs its defaults (schedule=staged, optimizer=adam) with augment=none, because the
plain script has no augmentation and horizontal flips would change digits.
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import machine
from PIL import Image

import keras
import tlkit
from tlkit.backbones import get_spec
from tlkit.backbones.build import build_backbone
from tlkit.preprocessing import ImagePreprocessing


def digits(size: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.repeat((d.images / 16.0 * 255.0)[..., None], 3, axis=-1).astype("uint8")
    images = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images])
    return images, d.target.astype("int32")


def pretrain(spec, images, labels, size, epochs, path):
    """Train the backbone from scratch on the source classes (BatchNorm in training mode, as any from-scratch run)."""
    keras.utils.set_random_seed(0)
    backbone = build_backbone(spec, size, None)
    inputs = keras.Input((size, size, 3))
    x = ImagePreprocessing(spec.preprocess)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(backbone(x))
    model = keras.Model(inputs, keras.layers.Dense(int(labels.max()) + 1)(x))
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(images.astype("float32"), labels, batch_size=64, epochs=epochs, verbose=0)
    backbone.save_weights(path)
    return history.history["accuracy"][-1]


def split_to_folders(root: Path, images, labels, seed=0):
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    val = set(order[: len(order) // 5].tolist())
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / ("val" if i in val else "train") / f"digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")


def keras_guide(spec, root: Path, size, weights, epochs, seed=0):
    """The guide's recipe, adapted to N classes (sparse cross-entropy from logits)."""
    keras.utils.set_random_seed(seed)
    load = lambda d: keras.utils.image_dataset_from_directory(  # noqa: E731
        d, image_size=(size, size), batch_size=32, seed=seed, shuffle=d.name == "train", label_mode="int")
    train, val = load(root / "train"), load(root / "val")
    preprocess = getattr(keras.applications, spec.family).preprocess_input
    base = getattr(keras.applications, spec.constructor)(include_top=False, weights=None,
                                                         input_shape=(size, size, 3))
    base.load_weights(weights)
    base.trainable = False
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Lambda(preprocess)(inputs)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    model = keras.Model(inputs, keras.layers.Dense(len(train.class_names))(x))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(), loss, metrics=["accuracy"])
    started = time.perf_counter()
    model.fit(train, validation_data=val, epochs=epochs[0], verbose=0)
    base.trainable = True
    model.compile(keras.optimizers.Adam(1e-5), loss, metrics=["accuracy"])
    model.fit(train, validation_data=val, epochs=epochs[1], verbose=0)
    seconds = time.perf_counter() - started
    val_loss, val_accuracy = model.evaluate(val, verbose=0)
    return {"val_accuracy": val_accuracy, "val_loss": val_loss, "train_s": seconds, "epochs": sum(epochs)}


def with_tlkit(spec, root: Path, size, weights, run_dir):
    cfg = tlkit.as_train_config({
        "backbone": {"name": spec.name, "weights": str(weights)},
        "data": {"source": "folder", "train_dir": str(root / "train"), "val_dir": str(root / "val"),
                 "image_size": size},
        "augment": {"name": "none"},
        "schedule": {"name": "staged", "stages": [
            {"name": "head", "train": "head", "epochs": 5, "lr_scale": 1.0},
            {"name": "top", "train": "top:2", "epochs": 5, "lr_scale": 0.1, "warmup_epochs": 1},
            {"name": "all", "train": "all", "epochs": 5, "lr_scale": 0.01, "warmup_epochs": 1},
        ]},  # = conf/schedule/staged.yaml
        "trainer": {"verbose": 0, "save_model": False},
    })
    started = time.perf_counter()
    result = tlkit.train(cfg, run_dir)
    return {"val_accuracy": result.metrics["val_accuracy"], "val_loss": result.metrics["val_loss"],
            "train_s": time.perf_counter() - started, "epochs": result.metrics["epochs"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--guide-epochs", type=int, nargs=2, default=[20, 10], help="head epochs, fine-tune epochs")
    args = parser.parse_args()
    spec = get_spec(args.backbone)
    images, labels = digits(args.size)
    source = labels < 5
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = tmp / "pretrained.weights.h5"
        source_accuracy = pretrain(spec, images[source], labels[source], args.size, args.pretrain_epochs, weights)
        split_to_folders(tmp / "target", images[~source], labels[~source])
        guide = keras_guide(spec, tmp / "target", args.size, weights, args.guide_epochs)
        ours = with_tlkit(spec, tmp / "target", args.size, weights, tmp / "run")
    report = {"benchmark": "tlkit staged vs the Keras guide's recipe", "machine": machine(), "args": vars(args),
              "source_task_train_accuracy": source_accuracy, "keras_guide": guide, "tlkit": ours,
              "accuracy_difference": ours["val_accuracy"] - guide["val_accuracy"],
              "time_ratio_tlkit_over_guide": ours["train_s"] / guide["train_s"]}
    print(json.dumps(report, indent=2))
    print(f"\nval accuracy: tlkit {ours['val_accuracy']:.4f} vs Keras guide {guide['val_accuracy']:.4f}; "
          f"time: tlkit {ours['train_s']:.0f}s vs {guide['train_s']:.0f}s (ratio {report['time_ratio_tlkit_over_guide']:.2f})")


if __name__ == "__main__":
    main()
