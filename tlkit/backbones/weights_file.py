"""The backbone's part of a weights file, wherever in the file it is.

People pretrain a classifier on their source task and save *it*: `model.save_weights("src.weights.h5")` of a
`Sequential([backbone, pooling, Dense])` (the backbone nested under its own group), of a Functional built on
`backbone.output` (the backbone's layers inlined beside the head's), or `model.save("src.keras")` (a zip holding
the same weights file). Keras 3 loads a `.weights.h5` file into a model of exactly its structure, so this module
finds the group of the file whose arrays are the backbone's (same paths, same shapes) and hands Keras a copy of
the backbone's own file with those values. A file in which no such group exists, or with more left over than a
classification head, is refused: a bigger model's first layers must not load without a word. (The input size a
.keras model was trained at: tlkit.backbones.weights.pretrained_size_of.)

Keras and h5py only (no TensorFlow).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

HEAD_ARRAYS_MAX = 16  # a head: pooling, dropout, a few Dense / BatchNormalization layers
KERAS_ARCHIVE_WEIGHTS = "model.weights.h5"  # the weights inside a .keras zip (keras.src.saving.saving_lib)
NOT_THE_MODEL = ("optimizer/",)  # a compiled model's .keras file also holds its optimizer's state


class NotTheBackbone(ValueError):
    """The file holds no group with this backbone's weights."""


def loadable_weights(model, path: Path, workdir: Path) -> tuple[Path, str | None]:
    """A file `model.load_weights` reads, holding the backbone's part of `path`, and a note of what was left out.

    model: the constructed backbone (keras.applications, include_top=False); path: a .weights.h5, legacy .h5 or
    .keras file; workdir: an empty folder for the copies (the caller removes it). Returns (path, None) when
    the file is the backbone's own. Raises NotTheBackbone when no part of the file fits.
    """
    source = _weights_of_archive(path, workdir) if path.name.endswith(".keras") else path
    if not source.name.endswith(".weights.h5"):
        return source, None  # legacy HDF5 (Keras's own no-top files): Keras matches it by layer order itself
    import h5py  # a Keras dependency

    with h5py.File(source, "r") as src_file:
        found = {name: shape for name, shape in _arrays(src_file).items() if not name.startswith(NOT_THE_MODEL)}
    if len(found) == len(model.weights):
        return source, None  # the backbone's own file (the common case): Keras checks every shape as it loads
    reference = workdir / "backbone.weights.h5"
    model.save_weights(str(reference))
    with h5py.File(reference, "r") as ref_file:
        wanted = _arrays(ref_file)
    prefix = _backbone_prefix(wanted, found)
    left_over = len(found) - len(wanted)
    if prefix is None or left_over > HEAD_ARRAYS_MAX:
        raise NotTheBackbone(
            f"the file holds {len(found)} weight arrays, the backbone {len(wanted)}, and "
            + ("no group of the file has the backbone's layers with their shapes" if prefix is None else
               f"{left_over} arrays beside the backbone's are more than a classification head "
               f"(at most {HEAD_ARRAYS_MAX})"))
    with h5py.File(source, "r") as src_file, h5py.File(reference, "r+") as copy:
        for name in wanted:
            copy[name][...] = src_file[prefix + name][...]
    where = f"under '{prefix.rstrip('/')}'" if prefix else "at the file's top level"
    rest = sorted({name.rsplit("/vars/", 1)[0] for name in found
                   if not (name.startswith(prefix) and name[len(prefix):] in wanted)})
    return reference, (f"backbone.weights={path}: loaded the backbone's {len(wanted)} weight arrays ({where}); the "
                       f"other {left_over}, the rest of the source model ({', '.join(rest)}), are not used")


def _weights_of_archive(path: Path, workdir: Path) -> Path:
    with zipfile.ZipFile(path) as archive:
        if KERAS_ARCHIVE_WEIGHTS not in archive.namelist():
            raise NotTheBackbone(f"the .keras archive has no {KERAS_ARCHIVE_WEIGHTS}")
        archive.extract(KERAS_ARCHIVE_WEIGHTS, workdir)
    return workdir / KERAS_ARCHIVE_WEIGHTS


def _arrays(file) -> dict[str, tuple]:
    """{path: shape} of every array in an open h5py file."""
    import h5py

    arrays = {}
    file.visititems(lambda name, item: arrays.__setitem__(name, item.shape) if isinstance(item, h5py.Dataset)
                    else None)
    return arrays


def _backbone_prefix(wanted: dict, found: dict) -> str | None:
    """The group prefix ('' for the file's root) under which every wanted array is found with its shape.

    Keras names the groups of a weights file by layer class and order ('layers/conv2d_3/vars/0'), so a backbone
    nested in a Sequential sits under 'layers/functional/', and one inlined in a Functional keeps its own paths.
    """
    prefixes = {""}
    for name in found:  # every nested model's group: the path up to each inner '/layers/'
        start = name.find("/layers/")
        while start != -1:
            prefixes.add(name[: start + 1])
            start = name.find("/layers/", start + 1)
    for prefix in sorted(prefixes, key=len):
        if all(found.get(prefix + name) == shape for name, shape in wanted.items()):
            return prefix
    return None
