"""The real tlkit/conf/ composes, and bad values fail at load time with the key, the value and the choices."""
import subprocess
import sys

import pytest

from conftest import CONF_DIR, ROOT
from tlkit.config import as_train_config
from tlkit.config.validate import parse_train_target
from tlkit.recipe.preflight import check_config as validate
from tlkit.backbones import get_spec
from tlkit.errors import ConfigError

GROUPS = ["backbone", "data", "augment", "head", "schedule", "optimizer", "recipe"]


def group_options(group):
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in group_options(g)]
)
def test_every_group_option_composes_into_the_schema(compose, group, option):
    cfg = as_train_config(compose([f"{group}={option}", "data=digits"] if group != "data" else [f"data={option}"]))
    assert cfg.backbone.name
    assert cfg.schedule.stages, "every composed config has at least one stage"


def test_every_registered_backbone_has_a_config_file():
    from tlkit.backbones import all_specs
    from tlkit.backbones.hub import CATALOGUE, HUB

    assert {s.name for s in all_specs()} | {HUB, *CATALOGUE} == set(group_options("backbone"))


def test_quickstart_recipe_shows_transfer_with_the_default_recipe(compose):
    cfg = as_train_config(compose(["recipe=quickstart"]))
    assert cfg.data.source.value == "digits" and cfg.data.classes == ["5", "6", "7", "8", "9"]
    assert cfg.backbone.weights == "tlkit:digits", "offline: weights pretrained here on digits 0-4"
    assert cfg.trainer.compare_scratch, "it prints what the same recipe reaches from random weights"
    assert cfg.schedule.name == "auto" and cfg.augment.name == "auto", "everything else is the default recipe"
    validate(cfg)


def test_tlkit_weights_name_a_source_task_and_are_made_once(tmp_path, monkeypatch):
    from tlkit.model import pretrain

    with pytest.raises(ConfigError, match=r"(?s)backbone.weights='tlkit:nothing'.*tlkit:digits \(scikit-learn digits 0-4\)"):
        validate(as_train_config({"backbone": {"name": "vgg16", "weights": "tlkit:nothing"},
                                  "data": {"source": "digits"}}))
    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path))
    cached = tmp_path / "pretrained" / pretrain.weights_file_name("vgg16", "digits", 32)
    cached.parent.mkdir()
    cached.write_bytes(b"already made")

    def must_not_pretrain(*args, **kwargs):
        raise AssertionError("a cached file is not made again")

    monkeypatch.setattr(pretrain, "pretrain_backbone", must_not_pretrain)
    assert pretrain.resolve_weights(get_spec("vgg16"), "tlkit:digits") == str(cached)
    assert pretrain.resolve_weights(get_spec("vgg16"), "imagenet") == "imagenet"


@pytest.mark.parametrize(
    "override,expected",
    [
        ("data.batchsize=8", "batchsize"),  # unknown key
        ("schedule.bn=sometimes", "frozen"),  # enum: lists the choices
        ("backbone.preprocess=imagenet", "caffe"),
        ("data.batch_size=eight", "batch_size"),  # wrong type
        ("backbone=resnet51", "resnet50"),  # misspelt group option: lists what exists
    ],
)
def test_bad_values_fail_when_the_config_loads(compose, override, expected):
    with pytest.raises(Exception) as info:
        compose(["data=digits", override])
    assert expected in message_chain(info.value)


def message_chain(error):
    """What Hydra prints: the error and its causes."""
    parts = []
    while error is not None:
        parts.append(str(error))
        error = error.__cause__ or error.__context__
    return "\n".join(parts)


def digits(**data):
    return as_train_config({"backbone": {"name": "resnet50", "weights": None},
                            "data": {"source": "digits", **data},
                            "schedule": {"stages": [{"name": "head"}]}})


def test_image_size_below_the_backbone_minimum_is_refused():
    cfg = digits(image_size=16)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert "data.image_size=16" in message and "32" in message


def test_weights_path_must_exist(tmp_path):
    cfg = digits()
    cfg.backbone.weights = str(tmp_path / "missing.weights.h5")
    with pytest.raises(ConfigError, match="backbone.weights"):
        validate(cfg)
    cfg.backbone.weights = str(tmp_path / "weights.npz")
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"\.h5"):
        validate(cfg)


@pytest.mark.parametrize("bad", [0.0, -1e-3])
def test_learning_rate_must_be_positive(bad):
    cfg = digits()
    cfg.optimizer.lr = bad
    with pytest.raises(ConfigError, match="optimizer.lr"):
        validate(cfg)


def test_stage_train_targets_resolve_to_whole_blocks():
    spec = get_spec("resnet50")
    blocks = spec.block_names
    assert parse_train_target("head", spec) == ()
    assert parse_train_target("all", spec) == blocks
    assert parse_train_target("top:2", spec) == blocks[-2:]
    assert parse_train_target(f"from:{blocks[1]}", spec) == blocks[1:]
    for bad in ["top:0", f"top:{len(blocks) + 1}", "from:conv9", "layers:30", "30"]:
        with pytest.raises(ConfigError) as info:
            parse_train_target(bad, spec, key="schedule.stages.1.train")
        assert "schedule.stages.1.train" in str(info.value) and blocks[0] in str(info.value)


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        get_spec("resnet51")
    assert "resnet50" in str(info.value) and "vgg16" in str(info.value)


def run_train(*overrides, timeout=120):
    return subprocess.run(
        [sys.executable, "train.py", *overrides], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_train_py_rejects_a_bad_config_before_tensorflow_starts(tmp_path):
    result = run_train("data=folder", f"data.path={tmp_path / 'nope'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert "data.path" in result.stderr and "nope" in result.stderr
    assert "Traceback" not in result.stderr, "a config mistake is a message, not a stack trace"


def test_validation_does_not_import_tensorflow():
    code = (
        "import sys; from tlkit.config import as_train_config; from tlkit.recipe.preflight import check_config as validate\n"
        "cfg = as_train_config({'backbone': {'name': 'xception', 'weights': None}, 'data': {'source': 'digits'},"
        " 'schedule': {'stages': [{'name': 'head'}]}})\n"
        "validate(cfg); print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_python_defaults_match_the_shipped_staged_schedule(compose):
    """The README's notebook example leaves the schedule out: it gets what train.py gets."""
    from_python = as_train_config({"backbone": {"name": "vgg16", "weights": None},
                                "data": {"source": "digits", "image_size": 32}, "augment": {"name": "none"}})
    validate(from_python)
    from_yaml = as_train_config(compose(["data=digits"]))
    assert from_python.schedule == from_yaml.schedule


@pytest.mark.parametrize("command", [["tlkit", "backbones"], [sys.executable, "-m", "tlkit", "backbones"]])
def test_backbones_command_lists_every_spec_with_its_contract(command):
    from tlkit.backbones import all_specs

    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for spec in all_specs():
        line = next(l for l in out.stdout.splitlines() if l.startswith(spec.name + " "))
        assert spec.constructor in line and spec.preprocess in line and " ".join(spec.block_names) in line
