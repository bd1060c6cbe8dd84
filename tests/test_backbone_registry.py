"""The registry as people search it: `tlkit backbones` filters, the stored facts, README's backbone table.

Pure Python and subprocesses: no model is built here (tests/test_backbones.py builds them and checks the stored
parameter counts, features and blocks against the real models).
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT
from tlkit.backbones import all_specs, get_spec
from tlkit.backbones.listing import backbones_table, format_count, markdown_table, parse_count, select

SPECS = all_specs()


def test_every_keras_applications_family_is_registered():
    import keras

    constructors = {name for name in dir(keras.applications) if name[0].isupper()}
    assert {spec.constructor for spec in SPECS} == constructors
    assert len(SPECS) >= 35


def test_every_spec_states_its_parameters_and_weights_source():
    for spec in SPECS:
        assert spec.params and spec.params > 0, spec.name
        assert spec.weights_source == f"keras:{spec.weights_file(spec.default_size)}"
    assert not get_spec("convnext_tiny").has_batch_norm and get_spec("efficientnet_v2_s").has_batch_norm


@pytest.mark.parametrize("text, count", [("30M", 30_000_000), ("2.5m", 2_500_000), ("500K", 500_000),
                                         ("1G", 10**9), ("25000000", 25_000_000)])
def test_parameter_counts_parse(text, count):
    assert parse_count(text) == count


def test_a_bad_parameter_count_is_refused():
    with pytest.raises(ValueError, match="30M"):
        parse_count("thirty")


def test_select_by_name_family_and_size():
    assert [s.name for s in select(SPECS, name="convnext*")] == [
        "convnext_base", "convnext_large", "convnext_small", "convnext_tiny", "convnext_xlarge"]
    small = select(SPECS, family="efficientnet*", max_params=parse_count("10M"))
    assert {s.family for s in small} == {"efficientnet", "efficientnet_v2"}
    assert all(s.params <= 10_000_000 for s in small) and "efficientnet_v2_b3" not in {s.name for s in small}
    assert select(SPECS, name="convnext*", max_params=parse_count("30M")) == [get_spec("convnext_tiny")]
    assert select(SPECS, name="no_such*") == []


def test_the_table_shows_each_ones_contract_size_blocks_and_weights():
    table = backbones_table([get_spec("convnext_tiny"), get_spec("resnet152")])
    lines = table.splitlines()
    convnext = next(line for line in lines if line.startswith("convnext_tiny "))
    for cell in ("ConvNeXtTiny", "27.8M", "224", "32", "none (in model)", "768", "keras:convnext_tiny_notop.h5",
                 "5: stem stage0 stage1 stage2 stage3"):
        assert cell in convnext, cell
    resnet = next(line for line in lines if line.startswith("resnet152 "))
    assert "caffe" in resnet and "58.4M" in resnet and "(in model)" not in resnet
    assert "convnext: ImageNet mean/std Normalization on 0-255" in table  # what 'none (in model)' does, stated


def test_format_count():
    assert [format_count(n) for n in (939120, 27820128, 348147968, 999)] == ["939.1K", "27.8M", "348.1M", "999"]


def _tlkit(*args):
    code = ("import sys; from tlkit.cli.main import main; rc = main(sys.argv[1:]); "
            "print('HEAVY', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)); sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_backbones_command_filters_without_importing_keras():
    result = _tlkit("backbones", "--filter", "convnext*", "--max-params", "30M")
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    names = [line.split()[0] for line in result.stdout.splitlines()[2:] if line.startswith("convnext")]
    assert names == ["convnext_tiny"]
    everything = _tlkit("backbones")
    assert len([line for line in everything.stdout.splitlines() if line.split()[:1] and
                line.split()[0] in {s.name for s in SPECS}]) == len(SPECS) >= 35


def test_backbones_command_refuses_a_bad_count_and_says_when_nothing_matches():
    bad = _tlkit("backbones", "--max-params", "lots")
    assert bad.returncode == 2 and "--max-params" in bad.stderr
    none = _tlkit("backbones", "--family", "no_such*")
    assert none.returncode == 0 and "no backbone matches" in none.stdout


def test_readme_backbone_table_is_the_registry():
    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- backbones:begin -->\n", 1)[1].split("\n<!-- backbones:end -->", 1)[0]
    assert table == markdown_table(), "README's backbone table differs: paste tlkit.backbones.listing.markdown_table()"
    for spec in SPECS:
        assert f"| `{spec.name}` |" in table
