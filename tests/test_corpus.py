"""Messy image folders: every kind of bad or unusual file, and what tlkit does with it.

One mixed corpus holds all the file kinds at once (unusual formats that must train, broken
files that must be left out and reported, files that are not images, nested folders, a
directory symlink loop); a real tiny training run on it must use exactly the good files
and report the others. Separate tiny folders cover the cases that must stop before
training (empty class, single class, train/val mismatch, data.on_bad_file=error, a class
whose files are all broken): each message names the problem and the path.

Simulated, on purpose: tests run as root here, and root reads a chmod-000 file anyway, so
the "unreadable file" is made unreadable by making tlkit's file read raise PermissionError
for that one path (with a real chmod as well, which bites when not root).
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import ROOT
from tlkit.config.schema import DataConfig
from tlkit.data import prescan as prescan_module
from tlkit.data.prescan import MAX_PIXELS, check_file, prescan
from tlkit.data.scan import check_data_config, scan_classes
from tlkit.errors import ConfigError, DataError

SIZE = 32


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """The pre-scan cache goes to a temporary folder, never to the user's ~/.cache."""
    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tlkit-cache"))


# --------------------------------------------------------------------------- writing every kind of file


def _stripes(horizontal: bool, seed: int, size=(40, 30)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w, h = size
    period = int(rng.integers(4, 9))
    line = (np.arange(max(w, h)) // (period // 2)) % 2
    img = np.tile(line[:h, None], (1, w)) if horizontal else np.tile(line[None, :w], (h, 1))
    pixels = img[..., None] * rng.uniform(80, 255, 3) + rng.normal(0, 15, (h, w, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_png16(path: Path, values: np.ndarray) -> None:
    """A 16-bit PNG (greyscale [H, W] or RGB [H, W, 3]), written by hand: Pillow cannot write 16-bit RGB."""
    values = np.asarray(values, dtype=">u2")
    h, w = values.shape[:2]
    colour_type = 0 if values.ndim == 2 else 2
    raw = b"".join(b"\x00" + values[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that claims width x height (a decompression bomb's header), with no real pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


def _truncated_jpeg(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # a download cut short: passes Image.verify(), fails a decode


GOOD_SPECIAL = {  # file name -> what it is; each must train, decoded to the right RGB 0-255 pixels
    "cmyk.jpg": "CMYK JPEG",
    "gray16.png": "16-bit greyscale PNG",
    "rgb16.png": "16-bit RGB PNG",
    "gray.png": "8-bit greyscale PNG",
    "rgba.png": "RGBA PNG",
    "palette.png": "palette PNG",
    "animated.gif": "animated GIF (first frame)",
    "rgb.bmp": "24-bit BMP",
    "palette.bmp": "8-bit palette BMP",
    "photo.webp": "WebP",
    "alpha.webp": "WebP with alpha",
    "huge.jpg": "8000x8000 JPEG",
    "nested/deeper/inner.png": "image in a nested subfolder",
}
BAD = {  # file name -> the words its reason must contain
    "truncated.jpg": "truncated or corrupt JPEG",
    "zero.jpg": "empty file (0 bytes)",
    "random.jpg": "not an image",
    "locked.png": "cannot read: Permission denied",
    "selfloop.jpg": "cannot read: Too many levels of symbolic links",
}
NORMAL_PER_CLASS = 8


def build_mixed_corpus(root: Path) -> dict:
    """Two classes of stripes plus every file kind; returns {name: path} of the special files."""
    paths = {}
    for c, cls in enumerate(["horizontal", "vertical"]):
        folder = root / cls
        folder.mkdir(parents=True)
        for i in range(NORMAL_PER_CLASS):
            pixels = _stripes(cls == "horizontal", seed=100 * c + i)
            Image.fromarray(pixels).save(folder / (f"n{i}.png" if i % 2 else f"n{i}.jpg"))
    h, v = root / "horizontal", root / "vertical"
    base = _stripes(True, seed=7, size=(48, 40))

    # Unusual formats that must train (split over the two classes).
    Image.fromarray(base).convert("CMYK").save(h / "cmyk.jpg", quality=95)
    write_png16(h / "gray16.png", np.linspace(0, 65535, 40 * 48).reshape(40, 48).astype(np.uint16))
    write_png16(h / "rgb16.png", base.astype(np.uint16) * 257)
    Image.fromarray(base[..., 1]).save(h / "gray.png")
    Image.fromarray(np.dstack([base, np.full(base.shape[:2], 90, np.uint8)]), mode="RGBA").save(h / "rgba.png")
    Image.fromarray(base).convert("P", palette=Image.ADAPTIVE, colors=16).save(h / "palette.png")
    frames = [Image.fromarray(base).convert("P"), Image.fromarray(255 - base).convert("P")]
    frames[0].save(v / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    Image.fromarray(base).save(v / "rgb.bmp")
    Image.fromarray(base).convert("P", palette=Image.ADAPTIVE, colors=16).save(v / "palette.bmp")
    Image.fromarray(base).save(v / "photo.webp", lossless=True)
    Image.fromarray(np.dstack([base, np.full(base.shape[:2], 90, np.uint8)]), mode="RGBA").save(
        v / "alpha.webp", lossless=True)
    huge = Image.new("RGB", (8000, 8000), (40, 90, 160))
    ImageDraw.Draw(huge).rectangle([2000, 2000, 6000, 6000], fill=(220, 200, 30))
    huge.save(v / "huge.jpg", quality=80)  # 64 MP: under the limit, so it trains
    (v / "nested" / "deeper").mkdir(parents=True)
    Image.fromarray(_stripes(False, seed=77)).save(v / "nested" / "deeper" / "inner.png")
    for name in GOOD_SPECIAL:
        paths[name] = h / name if (h / name).exists() else v / name

    # Broken files: left out and reported.
    _truncated_jpeg(h / "truncated.jpg", _stripes(True, seed=3, size=(64, 64)))
    (h / "zero.jpg").write_bytes(b"")
    (v / "random.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    Image.fromarray(_stripes(False, seed=5)).save(v / "locked.png")
    os.chmod(v / "locked.png", 0)  # bites when not root; simulated for root (see the module docstring)
    os.symlink("selfloop.jpg", v / "selfloop.jpg")  # a file symlink loop
    for name in BAD:
        paths[name] = h / name if os.path.lexists(h / name) else v / name

    # Not images, hidden things, a directory symlink loop: ignored without harm.
    (h / "notes.txt").write_text("not an image")
    (h / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    Image.fromarray(base).save(h / ".hidden.png")
    (v / ".thumbnails").mkdir()
    Image.fromarray(base).save(v / ".thumbnails" / "thumb.png")
    os.symlink(".", h / "again")  # horizontal/again -> horizontal: would recurse ~40 levels if followed blindly
    os.symlink("loop", root / "loop")  # a top-level symlink to itself: not a class
    return paths


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "images"
    paths = build_mixed_corpus(root)
    return root, paths


@pytest.fixture
def locked_unreadable(mixed, monkeypatch):
    """Make tlkit's read of locked.png fail as it does for a non-root user (root ignores chmod 000)."""
    locked = str(mixed[1]["locked.png"])
    os.chmod(locked, 0)  # a chmod changes the ctime: an earlier cached "readable" result is not reused
    real_read = prescan_module._read

    def read(path):
        if os.path.abspath(path) == locked:
            raise PermissionError(13, "Permission denied", path)
        return real_read(path)

    monkeypatch.setattr(prescan_module, "_read", read)
    return locked


def _folder(**kwargs) -> DataConfig:
    return DataConfig(source="folder", batch_size=8, **kwargs)


# --------------------------------------------------------------------------- (a) the pre-scan


def test_prescan_finds_every_bad_file_with_its_reason_and_keeps_the_rest(mixed, locked_unreadable):
    root, paths = mixed
    check_data_config(_folder(path=str(root)))  # skip (the default): the folder is usable
    scan = scan_classes("data.path", str(root))
    bad = {Path(item.path).name: item.reason for item in scan.report.bad}
    assert set(bad) == set(BAD), bad
    for name, words in BAD.items():
        assert words in bad[name], (name, bad[name])
    good = set(scan.report.good)
    for name in GOOD_SPECIAL:
        assert str(paths[name]) in good, f"{GOOD_SPECIAL[name]} ({name}) must be usable"
    assert len(good) == 2 * NORMAL_PER_CLASS + len(GOOD_SPECIAL)
    assert {name: len(files) for name, files in scan.classes.items()} == {
        "horizontal": NORMAL_PER_CLASS + 6, "vertical": NORMAL_PER_CLASS + 7}
    # No duplicates from the directory symlink loop; the loop is reported, not followed.
    assert not any("again" in path for path in good)
    assert any("again" in warning and "symlink" in warning for warning in scan.report.warnings)
    assert any(warning.startswith(str(root / "loop")) for warning in scan.report.warnings)
    assert scan.ignored == {".txt": 1}  # .DS_Store and .hidden.png are hidden; .thumbnails/ is a hidden folder
    formats = scan.report.formats()
    assert formats["WEBP"] == 2 and formats["BMP"] == 2 and formats["GIF"] == 1
    huge = scan.report.files[str(paths["huge.jpg"])]
    assert huge["size"] == [8000, 8000] and huge["ok"]
    assert scan.report.files[str(paths["animated.gif"])]["frames"] == 2
    assert scan.report.files[str(paths["palette.bmp"])]["decoder"] == "pil"
    assert scan.report.files[str(paths["alpha.webp"])]["decoder"] == "pil"


def test_prescan_is_cached_by_size_and_mtime(tmp_path):
    folder = tmp_path / "a"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(_stripes(True, seed=i)).save(folder / f"{i}.png")
    paths = sorted(str(p) for p in folder.iterdir())
    first = prescan(paths)
    assert first.checked == 5 and len(first.good) == 5
    prescan_module._MEMORY.clear()  # as a new process would: from the JSON file
    started = time.perf_counter()
    again = prescan(paths)
    assert again.checked == 0 and again.files == first.files
    assert time.perf_counter() - started < 0.5
    os.utime(paths[0], ns=(1, 1))  # a changed file is checked again, the others are not
    assert prescan(paths).checked == 1
    os.chmod(paths[1], 0o600)  # so is one whose permissions changed (ctime)
    assert prescan(paths).checked == 1


def test_huge_image_policy(tmp_path):
    """Above MAX_PIXELS (Pillow's bomb threshold, 89.5 MP) a file is skipped as too large, with its size."""
    assert 8000 * 8000 < MAX_PIXELS < 10000 * 10000
    png_header_only(tmp_path / "big.png", 10000, 10000)  # between Pillow's warning and error: tlkit's rule
    png_header_only(tmp_path / "bomb.png", 30000, 30000)  # above Pillow's error threshold
    for name, words in (("big.png", "10000x10000"), ("bomb.png", "too large")):
        entry = check_file(str(tmp_path / name))
        assert not entry["ok"] and "too large" in entry["reason"] and words in entry["reason"], entry


# --------------------------------------------------------------------------- decoding the unusual formats right


def test_unusual_formats_decode_to_the_right_rgb_pixels(mixed):
    """What the tf.data pipeline reads, against pixels known independently of tlkit's decoders."""
    import tensorflow as tf

    from tlkit.data.pipeline import _read_image

    _, paths = mixed
    base = _stripes(True, seed=7, size=(48, 40))

    def read(name):
        dataset = tf.data.Dataset.from_tensors(str(paths[name])).map(_read_image)  # graph mode, as in training
        return next(iter(dataset)).numpy()

    def pillow_rgb(name):
        with Image.open(paths[name]) as image:
            return np.asarray(image.convert("RGB"))

    for name in ["rgb16.png", "rgb.bmp", "photo.webp"]:
        np.testing.assert_array_equal(read(name), base, err_msg=name)  # exact: lossless
    over_white = np.round(base * (90 / 255) + 255 * (1 - 90 / 255)).astype(np.uint8)  # alpha 90 everywhere
    for name in ["rgba.png", "alpha.webp"]:  # TensorFlow, then Pillow: both composite over white
        np.testing.assert_array_equal(read(name), over_white, err_msg=name)
    gray16 = read("gray16.png")
    expected = (np.linspace(0, 65535, 40 * 48).reshape(40, 48).astype(np.uint16) >> 8).astype(np.uint8)
    np.testing.assert_array_equal(gray16[..., 0], expected)  # scaled, not clipped at 255
    assert gray16.mean() == pytest.approx(127.5, abs=1.5)
    np.testing.assert_array_equal(read("gray.png"), np.repeat(base[..., 1:2], 3, axis=-1))
    for name in ["palette.png", "palette.bmp", "animated.gif"]:
        np.testing.assert_array_equal(read(name), pillow_rgb(name), err_msg=name)  # palette applied; frame 0
    # CMYK: TF's default JPEG decode (fast IDCT) differs from Pillow's by ~5 levels on noisy
    # images, for RGB JPEGs too; inverted or misread CMYK would be off by ~100.
    cmyk = read("cmyk.jpg").astype(int)
    assert np.abs(cmyk - pillow_rgb("cmyk.jpg").astype(int)).mean() < 8
    assert np.abs(cmyk - base.astype(int)).mean() < 10  # close to the original colours


def test_the_pipeline_routes_each_file_to_the_decoder_the_prescan_names(mixed):
    """tlkit.data.decode.tf_decodes (Python, the pre-scan's) and its TF-op version (the pipeline's) agree."""
    import tensorflow as tf

    from tlkit.data.decode import tf_decodes_tensor

    root, _ = mixed
    report = scan_classes("data.path", str(root)).report
    for path in report.good:
        in_tf = bool(tf_decodes_tensor(tf.io.read_file(path)).numpy())
        assert in_tf == (report.files[path]["decoder"] == "tf"), path


def _png_rgba16(path: Path, values: np.ndarray) -> None:
    """A 16-bit RGBA PNG [H, W, 4], written by hand (Pillow cannot write one)."""
    values = np.asarray(values, dtype=">u2")
    h, w = values.shape[:2]
    raw = b"".join(b"\x00" + values[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _transparent_files(folder: Path, size: int) -> dict:
    """{name: (path, expected uint8 RGB over white, transparent mask)}: every kind of transparency."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    rgb = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    y, x = np.mgrid[0:size, 0:size]
    alpha = np.where(x < size // 3, 0, np.where(x < 2 * size // 3, (y * 11) % 256, 255)).astype(np.uint8)

    def over_white(colours, a):
        a = a[..., None].astype(np.float64) / 255.0
        return np.round(colours * a + 255.0 * (1.0 - a)).astype(np.uint8)  # never a tie: n/255 is never k + 1/2

    files = {}
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(folder / "rgba.png")
    files["rgba.png"] = (over_white(rgb, alpha), alpha == 0)
    palette = Image.fromarray(rgb).quantize(colors=8, method=Image.Quantize.MEDIANCUT)
    palette.save(folder / "palette.png", transparency=0)
    indices = np.asarray(palette)
    colours = np.asarray(palette.convert("RGB"))
    files["palette.png"] = (np.where((indices == 0)[..., None], 255, colours).astype(np.uint8), indices == 0)
    Image.fromarray(np.dstack([rgb[..., 1], alpha]), "LA").save(folder / "la.png")
    files["la.png"] = (over_white(np.repeat(rgb[..., 1:2], 3, -1), alpha), alpha == 0)
    low = rng.integers(0, 256, (size, size, 4)).astype(np.uint16)  # low bytes: noise, ignored
    _png_rgba16(folder / "rgba16.png", np.dstack([rgb, alpha]).astype(np.uint16) * 256 + low)
    files["rgba16.png"] = (over_white(rgb, alpha), alpha == 0)  # the high byte, as 8-bit
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(folder / "alpha.webp", lossless=True, exact=True)
    files["alpha.webp"] = (over_white(rgb, alpha), alpha == 0)  # Pillow's decoder in training and predict
    assert all(mask.any() for _, mask in files.values()), "every file has fully transparent pixels"
    return {name: (folder / name, expected, mask) for name, (expected, mask) in files.items()}


def test_transparency_is_white_in_training_predict_and_serving_alike(tmp_path):
    """One decoding rule (tlkit.data.decode): the same pixels through the training pipeline,
    `tlkit predict` and the SavedModel's serve_bytes decoder; transparent pixels come out white."""
    import tensorflow as tf

    from tlkit.data import load_data
    from tlkit.data.pipeline import _read_image
    from tlkit.tools.export import decode_for_serving
    from tlkit.tools.predict import load_images, read_image

    size = 24
    files = _transparent_files(tmp_path / "val" / "a", size)
    for name, (path, _, _) in files.items():  # the other class, and the training split, hold copies
        for folder in (tmp_path / "val" / "b", tmp_path / "train" / "a", tmp_path / "train" / "b"):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(path.read_bytes())

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def serve_decode(image_bytes):  # what serve_bytes maps over its batch, traced as in the SavedModel
        return decode_for_serving(image_bytes, size, size)

    for name, (path, expected, transparent) in files.items():
        training = next(iter(tf.data.Dataset.from_tensors(str(path)).map(_read_image))).numpy()
        np.testing.assert_array_equal(training, expected, err_msg=f"training pipeline: {name}")
        assert (training[transparent] == 255).all(), name
        np.testing.assert_array_equal(read_image(str(path)), expected, err_msg=f"tlkit predict: {name}")
        if name.endswith(".png"):  # serve_bytes takes the formats TensorFlow decodes
            served = serve_decode(tf.constant(path.read_bytes())).numpy()
            np.testing.assert_array_equal(served, expected.astype(np.float32), err_msg=f"serve_bytes: {name}")

    # End to end at the files' own size: load_data's batches == predict's batches.
    data = load_data(_folder(train_dir=str(tmp_path / "train"), val_dir=str(tmp_path / "val"), cache="off"),
                     None, size, seed=0)
    trained = np.concatenate([images.numpy() for images, _ in data.val])
    predicted, read, failures = load_images(data.val_files, size, size)
    assert read == data.val_files and not failures
    np.testing.assert_array_equal(trained, predicted)
    for image, path in zip(trained, data.val_files):
        np.testing.assert_array_equal(image, files[Path(path).name][1], err_msg=path)


# --------------------------------------------------------------------------- (b) a real run on the mixed corpus


def test_a_real_run_trains_on_the_good_files_and_reports_the_bad_ones(mixed, locked_unreadable, tmp_path):
    import tlkit

    root, paths = mixed
    cfg = tlkit.as_train_config({
        "backbone": {"name": "vgg16", "weights": None},
        "data": {"source": "folder", "path": str(root), "image_size": SIZE, "batch_size": 8, "val_split": 0.25},
        "augment": {"name": "none"},
        "schedule": {"name": "frozen", "stages": [{"name": "head", "train": "head", "epochs": 1}]},
        "trainer": {"verbose": 0},
        # Random weights on 37 images: the doctor rightly warns; not what this test is about.
        "doctor": {"silence": ["random-frozen-backbone", "no-pretrained-weights", "too-few-images-per-class",
                               "val-too-small"]},
    })
    run_dir = tmp_path / "run"
    result = tlkit.train(cfg, run_dir=run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    usable = 2 * NORMAL_PER_CLASS + len(GOOD_SPECIAL)
    assert metrics["status"] == "completed" and np.isfinite(metrics["val_loss"])
    assert metrics["num_train"] + metrics["num_val"] == usable
    assert metrics["class_names"] == ["horizontal", "vertical"]
    bad_files = metrics["data"]["bad_files"]
    assert bad_files["count"] == len(BAD) and bad_files["policy"] == "skip"
    assert {Path(item["path"]).name for item in bad_files["first"]} == set(BAD)
    split = metrics["data"]["prescan"]["splits"]["data.path"]
    assert split["usable"] == usable and split["formats"]["PNG"] >= 5
    assert (run_dir / "model.keras").is_file() and metrics["model_saved"] is True
    log = (run_dir / "train.log").read_text()
    assert f"{len(BAD)} file(s) cannot be used as images and are left out" in log
    assert str(paths["truncated.jpg"]) in log and "symlink" in log
    assert result.metrics["num_train"] == metrics["num_train"]


# --------------------------------------------------------------------------- stops before training


def _classes(root: Path, spec: dict) -> Path:
    for cls, count in spec.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(_stripes(cls < "m", seed=i)).save(root / cls / f"{i}.png")
    return root


def test_on_bad_file_error_stops_and_names_each_file_and_reason(tmp_path):
    root = _classes(tmp_path / "images", {"a": 3, "b": 3})
    _truncated_jpeg(root / "a" / "cut.jpg", _stripes(True, 1, (64, 64)))
    (root / "b" / "empty.jpg").write_bytes(b"")
    check_data_config(_folder(path=str(root)))  # skip: fine
    with pytest.raises(DataError) as info:
        check_data_config(_folder(path=str(root), on_bad_file="error"))
    message = str(info.value)
    assert "data.on_bad_file=error" in message and "2 of 8 image files" in message
    assert f"{root / 'a' / 'cut.jpg'}: truncated or corrupt JPEG" in message
    assert f"{root / 'b' / 'empty.jpg'}: empty file (0 bytes)" in message


def test_a_class_whose_files_are_all_broken_stops(tmp_path):
    root = _classes(tmp_path / "images", {"a": 3, "b": 3})
    (root / "c").mkdir()
    (root / "c" / "x.jpg").write_bytes(b"")
    (root / "c" / "y.png").write_text("not a png")
    with pytest.raises(DataError) as info:
        check_data_config(_folder(path=str(root)))
    message = str(info.value)
    assert "all failed the pre-scan: ['c']" in message and str(root) in message
    assert str(root / "c") in message


def test_empty_class_folder_stops_naming_it(tmp_path):
    root = _classes(tmp_path / "images", {"a": 3, "b": 3})
    (root / "nothing_here").mkdir()
    with pytest.raises(DataError, match=r"without images: \['nothing_here'\]") as info:
        check_data_config(_folder(path=str(root)))
    assert str(root / "nothing_here") in str(info.value)


def test_single_class_stops(tmp_path):
    root = _classes(tmp_path / "images", {"only": 4})
    with pytest.raises(DataError, match=r"at least 2 class folders.*\['only'\]") as info:
        check_data_config(_folder(path=str(root)))
    assert str(root) in str(info.value)


def test_train_val_class_mismatch_stops_naming_both_folders(tmp_path):
    train = _classes(tmp_path / "train", {"a": 2, "b": 2, "c": 2})
    val = _classes(tmp_path / "val", {"a": 2, "b": 2, "d": 2})
    with pytest.raises(DataError) as info:
        check_data_config(_folder(train_dir=str(train), val_dir=str(val)))
    message = str(info.value)
    assert str(train) in message and str(val) in message
    assert "missing from data.val_dir: ['c']" in message and "missing from data.train_dir: ['d']" in message


def test_data_path_that_is_a_symlink_loop_stops(tmp_path):
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(ConfigError, match=r"data\.path=.*loop.*does not exist"):
        check_data_config(_folder(path=str(tmp_path / "loop")))


def test_train_py_stops_on_a_bad_file_before_tensorflow_starts(tmp_path):
    root = _classes(tmp_path / "images", {"a": 3, "b": 3})
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 only a header")
    env = {**os.environ, "TLKIT_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "train.py", "backbone=vgg16", "backbone.weights=null", "data=folder",
         f"data.path={root}", "data.image_size=32", "data.on_bad_file=error", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("import time:"))
    assert f"{root / 'a' / 'broken.jpg'}: truncated or corrupt JPEG" in errors
    assert "Traceback" not in errors
    assert not [line for line in result.stderr.splitlines() if line.rstrip().endswith("| tensorflow")]
