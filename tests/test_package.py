"""tlkit as a package (issue 15): the configs and recipes ship inside the wheel, `tlkit train` is `python train.py`,
and a folder of the user's own configs joins tlkit's without editing the package.

None of these imports TensorFlow (Hydra's --cfg job prints the composed config and exits; doctor --config-only).
The wheel installed into a fresh environment and run end to end is .ci/wheel_check (CI runs it after the tests).
"""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import CONF_DIR, ROOT

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _run(args, cwd, timeout=120):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=ENV)


def test_the_wheel_holds_every_config_and_recipe(tmp_path):
    source = tmp_path / "src"  # built from a copy: setuptools writes build/ and *.egg-info beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "tlkit", source / "tlkit", ignore=shutil.ignore_patterns("__pycache__"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(source)]
    built = subprocess.run([*command, "--no-build-isolation"], capture_output=True, text=True, timeout=300)
    if built.returncode != 0:  # no setuptools/wheel here (the dev extra installs them): pip fetches them
        built = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("tlkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"tlkit/conf/{p.relative_to(CONF_DIR).as_posix()}" for p in CONF_DIR.rglob("*.yaml")}
    assert len(shipped) > 40 and "tlkit/conf/recipe/quickstart.yaml" in shipped
    assert shipped <= names, sorted(shipped - names)
    assert "tlkit/cli/train_command.py" in names and "tlkit/conf/__init__.py" in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "tlkit = tlkit.cli.main:main" in metadata


def test_tlkit_train_composes_what_train_py_composes_from_any_directory(tmp_path):
    overrides = ["recipe=quickstart", "optimizer.lr=3e-4", "--cfg", "job"]
    script = _run(["train.py", *overrides], cwd=ROOT)
    command = _run(["-m", "tlkit", "train", *overrides], cwd=tmp_path)  # not the checkout: the package's configs
    assert script.returncode == 0 and command.returncode == 0, (script.stderr[-2000:], command.stderr[-2000:])
    assert command.stdout == script.stdout
    assert "name: mobilenet_v2" in command.stdout and "lr: 0.0003" in command.stdout
    hydra_config = _run(["-m", "tlkit", "train", "--cfg", "hydra"], cwd=tmp_path)
    assert "name: train" in hydra_config.stdout  # so the log is train.log, as with python train.py


def test_tlkit_train_trains_into_a_run_directory_of_the_working_directory(tmp_path):
    """A tiny real run from outside the checkout: the run directory is relative to where the command ran, with
    train.log (Hydra's job name is `train` whichever entry point) and the model."""
    result = _run(["-m", "tlkit", "train", "backbone=vgg16", "backbone.weights=null", "data=synthetic",
                   "data.image_size=32", "data.num_images=40", "data.num_classes=2", "data.batch_size=8",
                   "schedule=frozen", "schedule.stages=[{name:head,train:head,epochs:1}]", "doctor.enabled=false",
                   "trainer.verbose=0", "hydra.run.dir=runs/tiny"], cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "tiny"
    for name in ("model.keras", "metrics.json", "train.log", ".hydra/overrides.yaml"):
        assert (run / name).exists(), name
    assert "finished in" in (run / "train.log").read_text()


def test_tlkit_train_has_train_py_guard(tmp_path):
    marker = tmp_path / "marker"
    result = _run(["-m", "tlkit", "train", "data=digits", "+hydra.callbacks.evil._target_=os.makedirs",
                   f"+hydra.callbacks.evil.name={marker}", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("tlkit: error:"), result.stderr[-2000:]
    assert not marker.exists() and not (tmp_path / "run").exists()


def _own_config_dir(tmp_path: Path) -> Path:
    own = tmp_path / "my_conf"
    (own / "recipe").mkdir(parents=True)
    (own / "backbone").mkdir()
    (own / "recipe" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /backbone: tiny_vgg\n  - override /data: digits\n"
        "data:\n  image_size: 40\nhydra:\n  run:\n    dir: my_runs/mine\n")
    (own / "backbone" / "tiny_vgg.yaml").write_text("name: vgg16\nweights: null\n")  # a new option of a group
    return own


def test_own_recipes_and_options_from_a_config_folder_of_ones_own(tmp_path):
    own = _own_config_dir(tmp_path)
    for args in (["-m", "tlkit", "train", "--config-dir", str(own)], ["-m", "tlkit", "train", "-cd", str(own)],
                 [str(ROOT / "train.py"), f"hydra.searchpath=[file://{own}]"]):
        result = _run([*args, "recipe=mine", "--cfg", "all"], cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "name: vgg16" in result.stdout and "image_size: 40" in result.stdout and "source: digits" in result.stdout
        assert "dir: my_runs/mine" in result.stdout
    doctor = _run(["-m", "tlkit", "doctor", "--config-only", "--config-dir", str(own), "recipe=mine",
                   "doctor.silence=[no-pretrained-weights]"], cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "tlkit doctor: vgg16" in doctor.stdout and "data=digits" in doctor.stdout
    shipped = _run(["-m", "tlkit", "doctor", "--config-only", "--config-dir", str(own), "recipe=quickstart"],
                   cwd=tmp_path)  # the package's recipes stay there beside the user's
    assert shipped.returncode == 0 and "mobilenet_v2" in shipped.stdout, shipped.stderr[-2000:]


def test_a_config_folder_that_would_run_code_is_refused_by_every_command(tmp_path):
    marker, evil = tmp_path / "marker", tmp_path / "evil"
    (evil / "recipe").mkdir(parents=True)
    (evil / "recipe" / "bad.yaml").write_text(
        f"# @package _global_\nhydra:\n  callbacks:\n    x:\n      _target_: os.makedirs\n      name: {marker}\n")
    for args in (["-m", "tlkit", "train", "--config-dir", str(evil)],
                 ["-m", "tlkit", "doctor", "--config-only", "--config-dir", str(evil)],
                 ["-m", "tlkit", "train", f"hydra.searchpath=[file://{evil}]"]):
        result = _run([*args, "recipe=bad", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "recipe/bad.yaml: hydra.callbacks.x._target_" in result.stderr, result.stderr[-2000:]
    assert not marker.exists() and not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- dependencies that match the code

# import name -> distribution, where they differ
DISTRIBUTION = {"yaml": "pyyaml", "PIL": "pillow", "sklearn": "scikit-learn", "ai_edge_litert": "ai-edge-litert",
                "tensorflow_datasets": "tensorflow-datasets", "hydra": "hydra-core"}
# imported but deliberately not declared, each with why
UNDECLARED = {"jax": "only with KERAS_BACKEND=jax, the user's own backend", "torch": "only with KERAS_BACKEND=torch",
              "tqdm": "predict's progress bar, skipped when absent (ImportError)"}
# declared but not imported by tlkit, each with why
NOT_IMPORTED = {"importlib-resources": "tensorflow-datasets 4.9.10 needs it to download and does not declare it",
                "pytest": "the dev extra's test runner", "pytest-xdist": "runs the tests on every core (pyproject addopts)",
                "setuptools": "builds the wheel (dev: offline, no isolation)",
                "wheel": "idem, for setuptools < 70.1", "hydra-optuna-sweeper": "a Hydra plugin: Hydra loads it",
                "hydra-submitit-launcher": "a Hydra plugin: Hydra loads it"}


def _third_party_imports() -> set:
    import ast

    names = set()
    for path in (ROOT / "tlkit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return {n for n in names if n != "tlkit" and n not in sys.stdlib_module_names and n != "__future__"}


def _declared() -> set:
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {re.split(r"[<>=\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_every_import_is_declared_and_every_dependency_used():
    imports, declared = _third_party_imports(), _declared()
    as_distributions = {DISTRIBUTION.get(name, name).lower().replace("_", "-") for name in imports - set(UNDECLARED)}
    assert as_distributions - declared == set(), "imported by tlkit, declared nowhere in pyproject.toml"
    assert declared - as_distributions - set(NOT_IMPORTED) == set(), "declared, never imported"
    assert "keras-cv" not in declared  # never imported (README: why not)
    assert {"pyyaml", "h5py"} <= declared and {"yaml", "h5py"} <= imports
