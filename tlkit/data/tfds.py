"""TensorFlow Datasets as a data source: `data=tfds data.name=cats_vs_dogs`.

    check_tfds_config(cfg)  pure Python + tensorflow_datasets' metadata (no TensorFlow): the keys,
                            the dataset name, the split strings, whether the data is prepared
    tfds_splits(cfg, ...)   the splits as uint8 [N, size, size, 3] arrays, decoded and resized by
                            the same rule as every other source, then handed to tlkit.data.pipeline

Offline first: a dataset that is neither prepared in data.data_dir nor downloadable stops
with one message naming the dataset, the folder and how to fix it (`tfds build` on a
machine with internet access, then copy the folder), never a stack trace or minutes of
download retries. Splits are decoded once into memory at data.image_size (as digits are),
so the cache, shuffling, augmentation and resume rules of the pipeline apply unchanged; the
decoded size is checked against trainer.memory_budget_gb first.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import socket
import time
from typing import Dict, Optional, Tuple
from urllib.parse import urlparse

from tlkit.errors import ConfigError, DataError

log = logging.getLogger("tlkit.data")
SPLIT_KEYS = ("train", "val", "test")
INSTALL_HINT = 'pip install "tlkit[tfds]"  (tensorflow-datasets and importlib_resources)'
SPLIT_SYNTAX = ("a TFDS split string: NAME, NAME[start:end] (percent or example counts) or A+B, "
                "e.g. train[:40%], train[40%:50%], test")
NAME_ALLOWED = ("a TensorFlow Datasets image-classification dataset with supervised keys (image, label), "
                "e.g. cats_vs_dogs, oxford_iiit_pet, tf_flowers, or one prepared in data.data_dir")


def _split_values(cfg) -> Dict[str, Optional[str]]:
    splits = getattr(cfg, "splits", None)
    return {key: getattr(splits, key, None) for key in SPLIT_KEYS}


def refuse_tfds_keys(cfg, source: str) -> None:
    """The tfds-only keys set with another source are a mistake (data.splits.val is not data.val_split)."""
    given = [(f"data.splits.{key}", value) for key, value in _split_values(cfg).items() if value is not None]
    given += [(f"data.{key}", getattr(cfg, key, None)) for key in ("name", "data_dir")
              if getattr(cfg, key, None) is not None]
    if given:
        key, value = given[0]
        raise ConfigError(key, value, f"null unless data.source=tfds (data.source is {source})",
                          hint="the folder, digits and synthetic sources hold out data.val_split (a fraction) "
                               "for validation; data=tfds takes data.name and data.splits.train/val/test")


def _root(cfg) -> str:
    """The folder TFDS reads prepared datasets from (its own default when data.data_dir is null)."""
    if getattr(cfg, "data_dir", None):
        return os.path.abspath(os.path.expanduser(str(cfg.data_dir)))
    return os.path.expanduser(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


def _builder(cfg):
    """tfds.builder for data.name; registered datasets and ones prepared in data_dir (no code needed)."""
    import tensorflow_datasets as tfds

    data_dir = _root(cfg) if getattr(cfg, "data_dir", None) else None
    try:
        return tfds.builder(str(cfg.name), data_dir=data_dir)
    except Exception as error:  # noqa: BLE001 - DatasetNotFoundError lists every dataset: keep its suggestion only
        lines = [line.strip() for line in str(error).splitlines()]
        suggestion = next((line for line in lines if line.startswith("Did you mean")), "")
        raise ConfigError("data.name", cfg.name, NAME_ALLOWED,
                          hint=f"{suggestion + ' ' if suggestion else ''}(looked in the tensorflow_datasets "
                               f"registry and in {_root(cfg)}; tfds.list_builders() lists the registry)") from None


def _is_prepared(builder) -> bool:
    from etils import epath

    # Checked first: tfds logs a warning for every missing version folder it inspects.
    return (epath.Path(builder.data_dir) / "dataset_info.json").exists() and builder.is_prepared()


def _supervised(info, name) -> Tuple[str, str, list]:
    """(image key, label key, class names) of an image-classification dataset, else a ConfigError."""
    import tensorflow_datasets as tfds

    keys = info.supervised_keys
    if not (isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys)):
        raise ConfigError("data.name", name, NAME_ALLOWED, hint=f"{name} has supervised_keys={keys!r}")
    image_key, label_key = keys
    image, label = info.features[image_key], info.features[label_key]
    if not isinstance(image, tfds.features.Image) or not isinstance(label, tfds.features.ClassLabel):
        raise ConfigError("data.name", name, NAME_ALLOWED,
                          hint=f"{name}'s supervised keys are {type(image).__name__} and {type(label).__name__}, "
                               "not Image and ClassLabel")
    if label.num_classes < 2:
        raise ConfigError("data.name", name, NAME_ALLOWED, hint=f"{name} has {label.num_classes} class")
    return image_key, label_key, list(label.names)


def _check_split_syntax(cfg) -> None:
    from tensorflow_datasets.core import ReadInstruction

    for key, value in _split_values(cfg).items():
        if value is None and key != "test":
            raise ConfigError(f"data.splits.{key}", None, SPLIT_SYNTAX,
                              hint="data=tfds needs a train and a val split; test is optional")
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"data.splits.{key}", value, SPLIT_SYNTAX)
        try:
            ReadInstruction.from_spec(value)
        except (ValueError, AssertionError) as error:
            raise ConfigError(f"data.splits.{key}", value, SPLIT_SYNTAX,
                              hint=str(error).splitlines()[-1]) from None


def _split_sizes(builder, cfg) -> Dict[str, int]:
    """Examples per configured split of a prepared dataset; unknown names, bad slices and overlaps fail."""
    from tensorflow_datasets.core import ReadInstruction

    info, sizes, ranges = builder.info, {}, {}
    available = ", ".join(f"{name} ({split.num_examples})" for name, split in info.splits.items())
    for key, value in _split_values(cfg).items():
        if value is None:
            continue
        try:
            sizes[key] = info.splits[value].num_examples
            absolute = ReadInstruction.from_spec(value).to_absolute(info.splits)
        except (ValueError, KeyError, AssertionError) as error:
            raise ConfigError(f"data.splits.{key}", value, f"{SPLIT_SYNTAX}, over {cfg.name}'s splits: {available}",
                              hint=str(error).splitlines()[-1]) from None
        if sizes[key] < 1:
            raise ConfigError(f"data.splits.{key}", value, f"a split with at least one example ({available})")
        ranges[key] = [(a.splitname, a.from_ or 0, info.splits[a.splitname].num_examples if a.to is None else a.to)
                       for a in absolute]
    for key in ("val", "test"):  # the same example in train and val/test would inflate the score
        shared = sum(max(0, min(end, other_end) - max(start, other_start))
                     for name, start, end in ranges.get(key, [])
                     for other, other_start, other_end in ranges["train"] if other == name)
        if shared:
            raise ConfigError(f"data.splits.{key}", _split_values(cfg)[key],
                              f"a split that does not overlap data.splits.train={_split_values(cfg)['train']!r}",
                              hint=f"they share {shared} examples")
    return sizes


def _not_prepared(cfg, builder, reason: str) -> DataError:
    name, root = str(cfg.name), _root(cfg)
    folder = name.split(":")[0].split("/")[0]
    where = f"data.data_dir={root}" if getattr(cfg, "data_dir", None) else f"{root} (data.data_dir=null: TFDS's default)"
    return DataError(
        f"TensorFlow Datasets '{name}' is not prepared in {where} (expected "
        f"{builder.data_dir}/dataset_info.json) and {reason}.\n"
        f"  Fix: on a machine with internet access run\n"
        f"      tfds build {folder} --data_dir=/some/dir\n"
        f"  (or python -c \"import tensorflow_datasets as tfds; tfds.load('{name}', data_dir='/some/dir', "
        f"download=True)\"),\n"
        f"  then copy /some/dir/{folder} to {os.path.join(root, folder)} on this machine (or point "
        f"data.data_dir at the folder that holds the copy). data.download=false fails at once offline.")


def _check_download_possible(cfg, builder) -> None:
    """Fail in a second when the download cannot work (tfds would retry for minutes offline)."""
    if importlib.util.find_spec("importlib_resources") is None:  # tensorflow-datasets 4.9.10 imports it to download
        raise _not_prepared(cfg, builder, f"cannot be downloaded: the module importlib_resources is missing "
                                          f"({INSTALL_HINT})")
    try:
        urls = list(builder.url_infos or ())
    except Exception:  # noqa: BLE001 - no checksums file: nothing to check before the download
        urls = []
    for host in sorted({urlparse(url).hostname for url in urls if urlparse(url).hostname}):
        try:
            socket.getaddrinfo(host, 443)
        except OSError as error:
            raise _not_prepared(cfg, builder, f"cannot be downloaded: its download host {host} does not resolve "
                                              f"({error}; no network?)") from None


def check_tfds_config(cfg) -> int:
    """Check data=tfds before TensorFlow starts; returns the number of classes."""
    if importlib.util.find_spec("tensorflow_datasets") is None:
        raise ConfigError("data.source", "tfds", "a source whose package is installed", hint=INSTALL_HINT)
    if not isinstance(cfg.name, str) or not cfg.name.strip():
        raise ConfigError("data.name", cfg.name, NAME_ALLOWED)
    _check_split_syntax(cfg)
    download = bool(getattr(cfg, "download", True))
    if cfg.data_dir is not None and not download and not os.path.isdir(_root(cfg)):
        raise ConfigError("data.data_dir", cfg.data_dir, "an existing folder holding prepared TFDS datasets, or null "
                          "(TFDS's default folder)", hint=f"{_root(cfg)} does not exist")
    builder = _builder(cfg)
    _, _, names = _supervised(builder.info, cfg.name)
    if _is_prepared(builder):
        _split_sizes(builder, cfg)
    elif not download:
        raise _not_prepared(cfg, builder, "data.download=false")
    else:
        _check_download_possible(cfg, builder)
    return len(names)


def _prepare(cfg, builder) -> None:
    if _is_prepared(builder):
        return
    if not getattr(cfg, "download", True):
        raise _not_prepared(cfg, builder, "data.download=false")
    _check_download_possible(cfg, builder)
    log.info("tfds: %s is not in %s; downloading and preparing it there", cfg.name, _root(cfg))
    try:
        builder.download_and_prepare()
    except Exception as error:  # noqa: BLE001 - network, disk or manual-download errors: one message with the fix
        raise _not_prepared(cfg, builder, f"could not be downloaded ({type(error).__name__}: "
                                          f"{str(error).splitlines()[0] if str(error) else ''})") from error


def tfds_splits(cfg, image_size: int, seed: int, memory_budget_gb: float):
    """(class names, train, val, test or None): each split (uint8 [N, size, size, 3], int32 labels)."""
    import numpy as np
    import tensorflow_datasets as tfds

    from tlkit.data.sampling import cap_per_class

    builder = _builder(cfg)
    _prepare(cfg, builder)
    image_key, _, names = _supervised(builder.info, cfg.name)
    sizes = _split_sizes(builder, cfg)
    need = sum(sizes.values()) * image_size * image_size * 3
    text = f"{sum(sizes.values())} images x {image_size}x{image_size}x3 uint8 = {need / 2**20:.1f} MiB"
    if need > memory_budget_gb * 2**30:
        raise DataError(f"tfds: {cfg.name} ({', '.join(f'{k} {v}' for k, v in sizes.items())}) decodes to {text}, "
                        f"over trainer.memory_budget_gb={memory_budget_gb:g}. Use smaller splits (e.g. "
                        f"data.splits.train=train[:20%]), data.max_images, a smaller data.image_size, or raise "
                        f"trainer.memory_budget_gb if the machine has the memory.")
    log.info("tfds: %s from %s: decoding %s into memory", cfg.name, builder.data_dir, text)
    out = {}
    for key, spec in _split_values(cfg).items():
        if spec is None:
            out[key] = None
            continue
        started = time.time()
        records = builder.as_dataset(split=spec, as_supervised=True, shuffle_files=False,
                                     decoders={image_key: tfds.decode.SkipDecoding()})
        labels = np.concatenate([y.numpy() for y in records.map(lambda x, y: y).batch(4096)]).astype(np.int32)
        keep = cap_per_class(labels, cfg.max_images, seed) if key == "train" else np.arange(len(labels))
        out[key] = (_decode(records, keep, len(labels), image_size), labels[keep])
        log.info("tfds: %s %s=%r: %d images in %.1fs", cfg.name, f"data.splits.{key}", spec, len(keep),
                 time.time() - started)
    return names, out["train"], out["val"], out["test"]


def _decode(records, keep, count: int, image_size: int):
    """The kept records, decoded by tlkit.data.decode's rule and resized as the pipeline resizes files."""
    import numpy as np
    import tensorflow as tf

    from tlkit.data.decode import decode_rgb_tf
    from tlkit.data.tf_images import AUTOTUNE, resizer

    resize = resizer(image_size, from_files=False)
    dataset = records.enumerate()
    if len(keep) < count:  # data.max_images: only the chosen examples are decoded
        mask = np.zeros(count, dtype=bool)
        mask[keep] = True
        wanted = tf.constant(mask)
        dataset = dataset.filter(lambda index, item: tf.gather(wanted, index))
    dataset = dataset.map(lambda index, item: resize(decode_rgb_tf(item[0]), item[1])[0], num_parallel_calls=AUTOTUNE)
    images, position = np.empty((len(keep), image_size, image_size, 3), dtype=np.uint8), 0
    for batch in dataset.batch(256).prefetch(AUTOTUNE):
        images[position:position + len(batch)] = batch.numpy()
        position += len(batch)
    return images


def tfds_facts(cfg) -> Tuple[int, int, Optional[int]]:
    """(training examples, classes, image side or None) for the default recipe, from the metadata (no TensorFlow).

    Unprepared datasets report 0 examples until downloaded: the recipe then sizes for a small data set."""
    builder = _builder(cfg)
    _, _, names = _supervised(builder.info, cfg.name)
    num_train = _split_sizes(builder, cfg).get("train", 0) if _is_prepared(builder) else 0
    image_key = builder.info.supervised_keys[0]
    shape = getattr(builder.info.features[image_key], "shape", None) or (None,)
    side = min((s for s in shape[:2] if s), default=None)
    return num_train, len(names), int(side) if side else None
