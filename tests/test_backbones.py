"""Registry-wide contracts: every backbone's blocks, sizes, preprocessing and weights files.

Each backbone is built once, at its minimum size with random weights (module-scoped
fixture parametrized by spec, so pytest builds and drops them one at a time).
Nothing here touches the network: ImageNet downloads are intercepted.

The biggest backbones (HEAVY) are `slow`: in CI (the reduced form) their block contracts run on a narrow twin, the
same Keras family function with the same depth and layer names at a fraction of the width, and the checks that need
the real width (features, the stored parameter count, the weights file Keras asks for) are left to the full form
(TLKIT_FULL_TESTS=1), which builds the real models.
"""
from __future__ import annotations

import dataclasses
import gc
import os
import re
import subprocess
import sys
import urllib.error

import h5py
import keras
import numpy as np
import pytest
from keras.src.utils import file_utils, naming

from tlkit.backbones import Block, all_specs, get_spec
from tlkit.backbones.blocks import BlockError, LayerGraph, assign_blocks, parameter_count
from tlkit.backbones.build import batch_norm_layers, build_backbone
from tlkit.backbones.weights import CACHE_SUBDIR, imagenet_weights_cached, imagenet_weights_path
from tlkit.errors import ConfigError, WeightsError
from tlkit.model.preprocessing import ImagePreprocessing

from backbone_twins import narrow_twin

SPECS = all_specs()
IDS = [spec.name for spec in SPECS]
FULL = os.environ.get("TLKIT_FULL_TESTS") == "1"
# Over ~60M parameters or ~800 layers: 5-7 s a build here, several builds a test module.
HEAVY = {"convnext_large", "convnext_xlarge", "efficientnet_b7", "efficientnet_v2_l", "nasnet_large"}
# Other members of a family CI already builds (same Keras builder function and block scheme, another depth or
# width), each with the member CI builds: built in the full form only, like HEAVY (10-25 s a build on 2 busy cores).
FULL_ONLY = {
    "resnet101": "resnet50", "resnet152": "resnet50", "resnet101_v2": "resnet50_v2", "resnet152_v2": "resnet50_v2",
    "densenet169": "densenet121", "densenet201": "densenet121", "efficientnet_b4": "efficientnet_b3",
    "efficientnet_b5": "efficientnet_b3", "efficientnet_b6": "efficientnet_b3",
    "efficientnet_v2_b1": "efficientnet_v2_b0",
    "efficientnet_v2_b2": "efficientnet_v2_b0", "efficientnet_v2_b3": "efficientnet_v2_b0",
    "efficientnet_v2_m": "efficientnet_v2_s", "convnext_small": "convnext_tiny", "convnext_base": "convnext_tiny",
}
SLOW = HEAVY | set(FULL_ONLY)


def reduced(spec) -> bool:
    """True when this run checks spec on its narrow twin (a heavy backbone outside the full form)."""
    return spec.name in HEAVY and not FULL


def skip_unless_full(spec):
    if spec.name in FULL_ONLY and not FULL:
        pytest.skip(f"{spec.name}: the same builder and blocks as {FULL_ONLY[spec.name]}, which this run builds; "
                    "TLKIT_FULL_TESTS=1 builds it")


def build_for_test(spec, size=None):
    size = spec.min_size if size is None else size
    return narrow_twin(spec, size) if reduced(spec) else build_backbone(spec, size, None)


def spec_params(specs=SPECS):
    return [pytest.param(spec, id=spec.name, marks=[pytest.mark.slow] if spec.name in SLOW else [])
            for spec in specs]


def needs_real_width(spec):
    if reduced(spec):
        pytest.skip(f"{spec.name} is built as its narrow twin here; TLKIT_FULL_TESTS=1 builds the real one")


@pytest.fixture(scope="module", params=spec_params())
def built(request):
    """(spec, backbone at min_size with random weights, its blocks)."""
    spec = request.param
    skip_unless_full(spec)
    backbone = build_for_test(spec)
    yield spec, backbone, assign_blocks(backbone, spec)
    del backbone
    keras.backend.clear_session()
    gc.collect()


def non_input_layers(model):
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def looks_auto_named(layer) -> bool:
    """Keras's automatic names are the snake-cased class name, maybe with a numeric suffix."""
    return re.fullmatch(rf"{naming.to_snake_case(type(layer).__name__)}(_\d+)?", layer.name) is not None


# --- blocks -------------------------------------------------------------------------------


def test_blocks_cover_every_layer_exactly_once(built):
    spec, backbone, blocks = built
    assert tuple(blocks) == spec.block_names
    assigned = [id(layer) for layers in blocks.values() for layer in layers]
    assert len(assigned) == len(set(assigned)), "a layer is in two blocks"
    assert set(assigned) == {id(layer) for layer in non_input_layers(backbone)}
    weighted = [layer for layer in backbone.layers if weight_bearing(layer)]
    assert {id(layer) for layer in weighted} <= set(assigned)


def test_each_block_holds_weights(built):
    spec, _, blocks = built
    empty = [name for name, layers in blocks.items() if not any(weight_bearing(layer) for layer in layers)]
    assert not empty, f"{spec.name}: blocks without weights: {empty}"


def test_blocks_run_in_graph_order(built):
    spec, backbone, blocks = built
    graph = LayerGraph(backbone)
    block_of = {id(layer): i for i, layers in enumerate(blocks.values()) for layer in layers}
    # No layer feeds from a later block (checking direct parents is enough, by induction).
    for layer in non_input_layers(backbone):
        for parent in graph.parents[id(layer)]:
            assert block_of.get(id(parent), -1) <= block_of[id(layer)], (layer.name, parent.name)
    # Each named start lies downstream of the previous block's start, and opens its block.
    previous_start = None
    for block in spec.blocks:
        if block.starts_at:
            start = backbone.get_layer(block.starts_at)
            assert start in blocks[block.name]
            if previous_start is not None:
                assert id(previous_start) in graph.ancestors(start), (previous_start.name, start.name)
            previous_start = start
        if block.ends_at:
            assert blocks[block.name][-1].name == block.ends_at


def test_block_boundaries_are_stably_named(built):
    spec, backbone, _ = built
    for block in spec.blocks:
        for name in filter(None, (block.starts_at, block.ends_at)):
            assert not looks_auto_named(backbone.get_layer(name)), f"{spec.name}.{block.name}: {name}"


def test_blocks_do_not_depend_on_automatic_names(built):
    # A second build in the same process gets other automatic names (conv2d_7 -> conv2d_19).
    spec, backbone, blocks = built
    if reduced(spec):
        pytest.skip("a narrow twin is built once here; TLKIT_FULL_TESTS=1 builds the real one twice")
    again = build_for_test(spec)
    blocks_again = assign_blocks(again, spec)
    for name in spec.block_names:
        classes = [type(layer).__name__ for layer in blocks[name]]
        assert [type(layer).__name__ for layer in blocks_again[name]] == classes, name
        # Explicitly named layers stay in the same block.
        stable = [layer.name for layer in blocks[name] if not looks_auto_named(layer)]
        assert [layer.name for layer in blocks_again[name] if not looks_auto_named(layer)] == stable


def weight_bearing(layer) -> bool:
    """True when the layer has weights, trainable or not (BatchNorm statistics count)."""
    return bool(layer.weights)


def block_summary(backbone, spec) -> list:
    """(block name, number of layers, number of parameters) per block, stem first."""
    return [(name, len(layers), sum(parameter_count(layer) for layer in layers))
            for name, layers in assign_blocks(backbone, spec).items()]


def test_block_summary_adds_up(built):
    spec, backbone, _ = built
    summary = block_summary(backbone, spec)
    assert [name for name, _, _ in summary] == list(spec.block_names)
    assert sum(n for _, n, _ in summary) == len(non_input_layers(backbone))
    assert sum(p for _, _, p in summary) == backbone.count_params()


def test_missing_start_layer_names_backbone_block_and_layer():
    spec = get_spec("mobilenet")
    backbone = build_backbone(spec, spec.min_size, None)
    broken = dataclasses.replace(spec, blocks=spec.blocks[:2] + (Block("later", "no_such_layer"),))
    with pytest.raises(BlockError, match="no_such_layer") as info:
        assign_blocks(backbone, broken)
    assert "'mobilenet'" in str(info.value) and "'later'" in str(info.value)


# --- sizes and features ---------------------------------------------------------------


def test_builds_at_min_size_with_the_declared_features(built):
    spec, backbone, _ = built
    needs_real_width(spec)
    _, height, width, channels = backbone.output.shape
    assert channels == spec.features
    assert height >= 1 and width >= 1
    assert spec.min_size <= spec.default_size


def test_has_batch_norm_matches_the_built_model(built):
    spec, backbone, _ = built
    assert spec.has_batch_norm == bool(batch_norm_layers(backbone))


def test_each_block_hands_on_one_feature_map_for_grad_cam(built):
    """tlkit explain's feature maps: every block's output, found from the spec, shrinking stem to top; NASNet's
    cells take the two cells before them, so only its last block hands on a single map."""
    from tlkit.tools.gradcam import block_outputs

    spec, backbone, _ = built
    outputs = block_outputs(backbone, spec)
    expected = spec.block_names[-1:] if spec.family == "nasnet" else spec.block_names
    assert tuple(outputs) == expected
    assert outputs[spec.block_names[-1]] is backbone.outputs[0]
    sides = [tuple(tensor.shape[1:3]) for tensor in outputs.values()]
    assert all(len(tensor.shape) == 4 for tensor in outputs.values())
    assert all(later[0] <= earlier[0] and later[1] <= earlier[1] for earlier, later in zip(sides, sides[1:])), sides


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_keras_rejects_one_pixel_below_min_size(spec):
    constructor = getattr(keras.applications, spec.constructor)
    size = spec.min_size - 1
    # Keras's message states its own minimum: ours must be the same number.
    with pytest.raises(ValueError, match=f"at least {spec.min_size}x{spec.min_size}"):
        constructor(include_top=False, weights=None, input_shape=(size, size, 3), **spec.builder_kwargs)
    with pytest.raises(ConfigError, match=str(spec.min_size)):
        build_backbone(spec, size, None)


# --- preprocessing ------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_preprocessing_layer_matches_keras_preprocess_input(spec):
    images = np.random.default_rng(0).uniform(0, 255, size=(2, 5, 7, 3)).astype("float32")
    expected = getattr(keras.applications, spec.family).preprocess_input(images.copy())
    ours = keras.ops.convert_to_numpy(ImagePreprocessing(spec.preprocess)(images))
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=1e-6)
    if spec.preprocess == "none":
        np.testing.assert_array_equal(expected, images)  # Keras's preprocess_input is the identity


def test_backbones_without_preprocessing_rescale_inside(built):
    spec, backbone, _ = built
    first = non_input_layers(backbone)[0]
    # (ConvNeXt's first layer is its Normalization on 0-255, EfficientNet's and MobileNetV3's a Rescaling.)
    assert isinstance(first, (keras.layers.Rescaling, keras.layers.Normalization)) == (spec.preprocess == "none"), first


def _leading_preprocessing(backbone):
    """The sub-model from the input through the backbone's leading Rescaling/Normalization layers."""
    leading = []
    for layer in non_input_layers(backbone):
        if not isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)):
            break
        leading.append(layer)
    return keras.Model(backbone.inputs[0], leading[-1].output) if leading else None


def test_builtin_preprocessing_takes_rgb_0_255_once(built):
    """A preprocess='none' backbone's own first layers map RGB 0-255 to a normalised range (-1..1, or ImageNet
    mean/std's about -2.1..2.6; not 0..255 and not 0..1, which applying it twice or not at all would give)."""
    spec, backbone, _ = built
    leading = _leading_preprocessing(backbone)
    assert (leading is not None) == (spec.preprocess == "none") == bool(spec.builtin_preprocess)
    if leading is None or spec.family == "efficientnet":
        return  # EfficientNet's Normalization holds the imagenet weights' mean/std: identity in a random build
    size = spec.min_size
    ramp = np.linspace(0, 255, size * size * 3, dtype="float32").reshape(1, size, size, 3)
    out = keras.ops.convert_to_numpy(leading(ramp))
    assert -2.2 < out.min() < -0.9 and 0.95 < out.max() < 2.7, (spec.name, out.min(), out.max())


def test_stored_parameter_count_is_the_built_models(built):
    spec, backbone, _ = built
    needs_real_width(spec)
    assert spec.params == backbone.count_params()


# --- ImageNet weights file names --------------------------------------------------------

# MobileNet v1/v2 pick their file by input size, falling back to 224.
EXTRA_SIZES = {"mobilenet": (96, 128, 192), "mobilenet_v2": (96, 160, 200)}


def full_form_only(spec, size) -> bool:
    return spec.name not in EXTRA_SIZES and size != spec.min_size


# A size-independent file (all but MobileNet v1/v2) is checked at the minimum size in CI and at the default size too
# in the full form: each case builds the whole model (Keras asks for the file last), 3-15 s on 2 cores.
FILE_CASES = [
    pytest.param(spec, size, id=f"{spec.name}-{size}",
                 marks=[pytest.mark.slow] if spec.name in SLOW or full_form_only(spec, size) else [])
    for spec in SPECS
    for size in sorted({spec.min_size, spec.default_size, *EXTRA_SIZES.get(spec.name, ())})
]


class Requested(Exception):
    pass


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined or non-square")  # Keras's 224 fallback
@pytest.mark.parametrize("spec, size", FILE_CASES)
def test_weights_file_is_what_keras_requests(spec, size, monkeypatch):
    needs_real_width(spec)  # the constructor builds the whole model before it asks for the file
    skip_unless_full(spec)
    if not FULL and full_form_only(spec, size):
        pytest.skip("a size-independent weights file: its default size is checked with TLKIT_FULL_TESTS=1")

    def record(fname=None, origin=None, **kwargs):
        raise Requested(fname, kwargs.get("cache_subdir"))

    monkeypatch.setattr(file_utils, "get_file", record)
    constructor = getattr(keras.applications, spec.constructor)
    with pytest.raises(Requested) as info:
        constructor(include_top=False, weights="imagenet", input_shape=(size, size, 3), **spec.builder_kwargs)
    assert info.value.args == (spec.weights_file(size), CACHE_SUBDIR)
    keras.backend.clear_session()


# --- loading weights ------------------------------------------------------------------------

SMALL, OTHER = "mobilenet", "mobilenet_v3_small"


def assert_same_weights(a, b):
    assert len(a.weights) == len(b.weights)
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y))


def save_legacy_h5(model, path):
    """The format Keras downloads (Keras 3's save_weights only writes .weights.h5)."""
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, model)


@pytest.fixture(scope="module")
def saved_files(tmp_path_factory):
    """Weights files of SMALL (both formats) and of OTHER, written by the test itself."""
    folder = tmp_path_factory.mktemp("weights")
    keras.utils.set_random_seed(1234)
    small = build_backbone(get_spec(SMALL), 32, None)
    small.save_weights(folder / "small.weights.h5")
    save_legacy_h5(small, folder / "small_legacy.h5")
    other = build_backbone(get_spec(OTHER), 32, None)
    other.save_weights(folder / "other.weights.h5")
    save_legacy_h5(other, folder / "other_legacy.h5")
    yield folder, small
    keras.backend.clear_session()


@pytest.mark.parametrize("file_name", ["small.weights.h5", "small_legacy.h5"])
def test_weights_file_round_trip(saved_files, file_name):
    folder, small = saved_files
    fresh = build_backbone(get_spec(SMALL), 32, None)
    assert any(
        not np.array_equal(keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y))
        for x, y in zip(fresh.weights, small.weights)
    ), "two random builds came out equal: the round trip would prove nothing"
    loaded = build_backbone(get_spec(SMALL), 32, str(folder / file_name))
    assert_same_weights(loaded, small)


@pytest.mark.parametrize("file_name", ["other.weights.h5", "other_legacy.h5"])
def test_weights_of_another_backbone_are_refused(saved_files, file_name):
    folder, _ = saved_files
    with pytest.raises(WeightsError) as info:
        build_backbone(get_spec(SMALL), 32, str(folder / file_name))
    message = str(info.value)
    assert file_name in message and f"'{SMALL}'" in message and "MobileNet(include_top=False)" in message


def _source_classifiers(backbone, folder):
    """What people save after pretraining on a source task: the whole classifier, three ways."""
    head = [keras.layers.GlobalAveragePooling2D(), keras.layers.Dropout(0.2), keras.layers.Dense(7)]
    nested = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 127.5, offset=-1), backbone, *head])
    nested.save_weights(folder / "nested.weights.h5")
    nested.compile("adam", "mse")  # a trained model's .keras file holds its optimizer's state too
    nested.optimizer.build(nested.trainable_variables)
    nested.save(folder / "nested.keras")
    inlined = backbone.output
    for layer in [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(7)]:
        inlined = layer(inlined)
    keras.Model(backbone.input, inlined).save_weights(folder / "inlined.weights.h5")


@pytest.mark.parametrize("file_name", ["nested.weights.h5", "nested.keras", "inlined.weights.h5"])
def test_the_backbone_part_of_a_source_classifier_loads(saved_files, file_name, caplog):
    folder, small = saved_files
    if not (folder / file_name).exists():
        _source_classifiers(small, folder)
    with caplog.at_level("INFO", logger="tlkit.train"):
        loaded = build_backbone(get_spec(SMALL), 32, str(folder / file_name))
    assert_same_weights(loaded, small)
    assert "the other 2, the rest of the source model (layers/dense), are not used" in caplog.text


def test_a_bigger_model_than_a_classifier_is_refused(saved_files, tmp_path):
    """Two backbones in one file: the second is not a head, so neither is loaded silently."""
    folder, small = saved_files
    twin = build_backbone(get_spec(SMALL), 32, None)
    both = keras.Model(small.input, [small.output, twin(small.input)])
    both.save_weights(tmp_path / "both.weights.h5")
    with pytest.raises(WeightsError, match="more than a classification head"):
        build_backbone(get_spec(SMALL), 32, str(tmp_path / "both.weights.h5"))


def test_a_keras_archive_says_its_input_size(saved_files):
    from tlkit.backbones.weights import pretrained_size_of

    folder, small = saved_files
    if not (folder / "nested.keras").exists():
        _source_classifiers(small, folder)
    assert pretrained_size_of(folder / "nested.keras") == 32
    assert pretrained_size_of(folder / "nested.weights.h5") is None, "a weights file of a conv net holds no size"


@pytest.mark.parametrize("weights, expected", [("model.pt", "expected 'imagenet', null"), ("nowhere.h5", "no file")])
def test_weights_path_must_be_an_existing_h5(tmp_path, weights, expected):
    with pytest.raises(WeightsError, match=expected):
        build_backbone(get_spec(SMALL), 32, str(tmp_path / weights))


@pytest.fixture
def empty_keras_home(tmp_path, monkeypatch):
    """KERAS_HOME is an empty folder and downloads fail at once (as offline, never hanging)."""
    from keras.src.backend import config

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path))  # Keras read KERAS_HOME at import

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    return tmp_path


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined or non-square")
def test_imagenet_without_cached_file_names_the_file_and_the_folder(empty_keras_home):
    spec = get_spec(SMALL)
    expected = empty_keras_home / CACHE_SUBDIR / spec.weights_file(32)
    assert imagenet_weights_path(spec, 32) == expected
    assert not imagenet_weights_cached(spec, 32)
    with pytest.raises(WeightsError) as info:
        build_backbone(spec, 32, "imagenet")
    message = str(info.value)
    assert spec.weights_file(32) in message and str(expected.parent) in message
    assert "backbone.weights=null" in message and "backbone.weights=/path/to/file.h5" in message


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined or non-square")
def test_imagenet_with_a_wrong_cached_file_says_so(empty_keras_home):
    spec = get_spec(SMALL)
    cached = imagenet_weights_path(spec, 32)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"not the official file")
    assert imagenet_weights_cached(spec, 32)
    with pytest.raises(WeightsError, match="hash") as info:
        build_backbone(spec, 32, "imagenet")
    assert str(cached) in str(info.value)


def test_weights_helpers_import_without_keras():
    # Config validation calls them before TensorFlow starts.
    code = "import sys, tlkit.backbones.weights; sys.exit('keras' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
