"""The doctor's catalogue of findings (tlkit/doctor/catalogue.py) against the code that makes them and the README.

Pure `ast` and text: no TensorFlow. Every Finding(...) / self._diagnose(...) in tlkit/ names a catalogued id with a
catalogued severity, from the module of a catalogued phase; every catalogued id and severity is made somewhere;
README.md's doctor tables list exactly the catalogued ids.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tlkit.config.validate import validate
from tlkit.doctor.catalogue import CATALOGUE, FINDING_IDS, PHASES, catalogue_table
from tlkit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tlkit"
# The module each phase's findings are made in.
PHASE_OF_MODULE = {"config_checks.py": "config", "data_checks.py": "data", "model_checks.py": "model",
                   "monitor.py": "runtime", "hub_checks.py": "config", "multilabel_checks.py": "data"}
MAKERS = ("Finding", "_diagnose")


def _severities(node: ast.AST, function: ast.AST | None) -> set:
    """Severity.X names in `node`; a plain name is followed to its assignments in the enclosing function."""
    found = {n.attr for n in ast.walk(node)
             if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "Severity"}
    if isinstance(node, ast.Name) and function is not None:
        for n in ast.walk(function):
            if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == node.id for t in n.targets):
                found |= _severities(n.value, None)
    return found


def findings_made() -> list:
    """(id, {severities}, file name, line) of every Finding / _diagnose call with a literal id in tlkit/."""
    made = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or len(node.args) < 2:
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name not in MAKERS:
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue  # passes an id on (Finding(f.id, ...), Finding(finding_id, ...)): checked where it is made
            enclosing = min((f for f in functions if f.lineno <= node.lineno <= f.end_lineno),
                            key=lambda f: f.end_lineno - f.lineno, default=None)
            made.append((first.value, _severities(node.args[1], enclosing), path.name, node.lineno))
    return made


MADE = findings_made()


def test_the_scan_finds_the_checks():
    assert len(MADE) > 40 and {"lr-too-high", "input-range", "step0-loss", "nan-loss"} <= {m[0] for m in MADE}
    assert all(severities for _, severities, _, _ in MADE), [m for m in MADE if not m[1]]


def test_every_finding_made_is_catalogued_with_its_severity_and_phase():
    wrong = []
    for finding_id, severities, file, line in MADE:
        kind = CATALOGUE.get(finding_id)
        if kind is None:
            wrong.append(f"{file}:{line}: {finding_id!r} is not in the catalogue")
            continue
        if not severities <= {s.value for s in kind.severities}:
            wrong.append(f"{file}:{line}: {finding_id} made as {sorted(severities)}, catalogued as "
                         f"{[s.value for s in kind.severities]}")
        if PHASE_OF_MODULE.get(file) not in kind.phases:
            wrong.append(f"{file}:{line}: {finding_id} made in {file}, catalogued in phase(s) {kind.phases}")
    assert wrong == []


def test_every_catalogued_id_severity_and_phase_is_made_somewhere():
    made = {}
    for finding_id, severities, file, _ in MADE:
        entry = made.setdefault(finding_id, (set(), set()))
        entry[0].update(severities)
        entry[1].add(PHASE_OF_MODULE.get(file))
    assert sorted(set(FINDING_IDS) - set(made)) == []
    for kind in CATALOGUE.values():
        assert {s.value for s in kind.severities} == made[kind.id][0], kind.id
        assert set(kind.phases) == made[kind.id][1], kind.id


def test_catalogue_entries_are_well_formed():
    for kind in CATALOGUE.values():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", kind.id), kind.id
        assert set(kind.phases) <= set(PHASES) and kind.meaning and "\n" not in kind.meaning


def _readme_doctor_ids() -> list:
    """The backticked ids in the first column of the tables of README's doctor section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## The doctor", 1)[1].split("\n## ", 1)[0]
    ids = []
    for line in section.splitlines():
        if line.startswith("| `"):
            ids += re.findall(r"`([^`]+)`", line.split("|")[1])
    return ids


def test_readme_tables_list_exactly_the_catalogued_ids():
    listed = _readme_doctor_ids()
    assert len(listed) == len(set(listed)), "an id is listed twice"
    assert sorted(set(listed) - set(FINDING_IDS)) == [], "README lists ids the doctor does not have"
    assert sorted(set(FINDING_IDS) - set(listed)) == [], "README misses catalogued ids"


def test_doctor_list_prints_the_catalogue_without_tensorflow_or_a_config(tmp_path):
    code = ("import sys; from tlkit.cli.main import main; rc = main(['doctor', '--list']); "
            "heavy = sorted(m for m in ('tensorflow', 'keras', 'hydra') if m in sys.modules); "
            "print('HEAVY', heavy); sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["id", "severity", "phase", "meaning"]
    assert result.stdout.replace("HEAVY []\n", "").strip() == catalogue_table().strip()
    for finding_id in FINDING_IDS:
        assert any(line.startswith(finding_id + " ") for line in lines), finding_id


def _config(silence: list):
    import tlkit

    return tlkit.as_train_config({"backbone": {"name": "vgg16", "weights": None},
                                  "data": {"source": "digits", "image_size": 32}, "doctor": {"silence": silence}})


def test_unknown_silenced_id_is_refused_when_the_config_is_validated():
    cfg = _config(["no-pretrained-weights", "lr-to-high"])
    with pytest.raises(ConfigError) as caught:
        validate(cfg)
    error = caught.value
    assert error.key == "doctor.silence.1" and error.value == "lr-to-high"
    assert "lr-too-high" in str(error)


def test_unknown_silenced_id_without_a_close_match_lists_the_ids():
    cfg = _config(["zzzz"])
    with pytest.raises(ConfigError) as caught:
        validate(cfg)
    assert caught.value.key == "doctor.silence.0" and "nan-loss" in str(caught.value)


def test_known_silenced_ids_pass():
    validate(_config(list(FINDING_IDS)))
