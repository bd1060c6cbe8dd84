"""scripts/bench_recipes.py (issue 13): the verdicts its report gives, and the tiny form CI runs end to end."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

from bench_recipes import Cell  # noqa: E402
from bench_recipes_report import report, summarise, verdicts  # noqa: E402

FULL = os.environ.get("TLKIT_FULL_TESTS") == "1"
CELL = Cell("digits", "mobilenet_v2", 30)  # 5 classes x 30 val images: one image is 1/150


def _row(contender, val, seed=0, wall=10.0):
    return {"cell": CELL.key, "seed": seed, "contender": contender, "val_accuracy": val, "test_accuracy": val,
            "wall_s": wall}


def test_one_image_apart_is_a_tie_even_in_float32():
    """The Keras peers report float32 accuracies: 40/150 read back as 0.2666666805744171 is one image from 39/150."""
    rows = [_row("tlkit", 39 / 150), _row("keras_guide", 0.2666666805744171), _row("linear_probe", 37 / 150),
            _row("fastai", 41 / 150), _row("scratch", 38 / 150)]
    counts = verdicts(summarise(rows, [CELL], [0]))
    assert counts["keras_guide"] == [0, 1, 0]
    assert counts["linear_probe"] == [1, 0, 0]  # two images ahead: a win
    assert counts["fastai"] == [0, 0, 1]  # two images behind: a loss
    assert counts["scratch"] == [0, 1, 0]


def test_the_ceiling_is_the_best_sweep_point_and_the_default_counts_as_one_only_beside_them():
    rows = [_row("tlkit", 0.90), _row("tlkit", 0.94, seed=1), _row("sweep:steps_x2", 0.96),
            _row("sweep:steps_x2", 0.96, seed=1), _row("sweep:lr_0.3", 0.80), _row("sweep:lr_0.3", 0.99, seed=1),
            _row("keras_guide", 0.5, wall=5.0), _row("keras_guide", 0.5, seed=1, wall=5.0)]
    table = summarise(rows, [CELL], [0, 1])
    assert table[CELL.key]["ceiling"]["from"] == "sweep:steps_x2"  # best mean over the seeds, not the best run
    assert table[CELL.key]["tlkit"]["val"] == pytest.approx(0.92)
    text = report(rows, [CELL], [0, 1], "test machine", 60)
    assert "Median gap to the ceiling: 4.00 points" in text
    assert "Wall time ÷ the Keras guide: median 2.00" in text
    only_default = [_row("tlkit", 0.9), _row("keras_guide", 0.5)]
    assert "ceiling" not in summarise(only_default, [CELL], [0])[CELL.key], "no sweep point run: no ceiling to claim"
    assert "Median gap to the ceiling" not in report(only_default, [CELL], [0], "test machine", 60)


@pytest.mark.slow
def test_smoke_matrix_runs_every_contender_offline(tmp_path, monkeypatch):
    """What CI runs: one tiny cell, pretraining included, each contender in its own process; a rerun skips them."""
    # CI: the default and the linear probe; TLKIT_FULL_TESTS=1 adds the Keras-guide script (a minute more here)
    contenders = ["tlkit", "keras_guide", "linear_probe"] if FULL else ["tlkit", "linear_probe"]
    command = [sys.executable, "scripts/bench_recipes.py", "--smoke", "--root", str(tmp_path),
               "--contenders", ",".join(contenders)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "smoke" / "results.jsonl").read_text().splitlines()]
    assert {r["contender"] for r in rows} == set(contenders)
    assert all("failed" not in r and 0.0 <= r["val_accuracy"] <= 1.0 for r in rows), rows
    assert (tmp_path / "smoke" / "weights" / "mobilenet_v2_digits_32px.weights.h5").is_file()
    assert "| digits | mobilenet_v2 | 10 |" in (tmp_path / "smoke" / "report.md").read_text()
    # A rerun skips what it has (checked in this process: a rerun that ran anything would call a contender).
    import bench_recipes

    def ran(*args, **kwargs):
        raise AssertionError(f"the rerun ran a contender again: {args[:1]}")

    monkeypatch.setattr(bench_recipes, "run_peer", ran)
    monkeypatch.setattr(bench_recipes, "run_tlkit", ran)
    results = tmp_path / "smoke" / "results.jsonl"
    bench_recipes.run_matrix(tmp_path / "smoke", bench_recipes.SMOKE, [0], contenders, results, pretrain_epochs=1)
    assert len(results.read_text().splitlines()) == len(contenders)
