"""Benchmark 7: tlkit's default recipe against its peers on a matrix of transfer tasks, offline.

    python scripts/bench_recipes.py              # the matrix (MATRIX: 9 cells x 2 seeds; one seed ~95 min on 2 cores)
    python scripts/bench_recipes.py --extended   # and the remaining label budgets (EXTENDED)
    python scripts/bench_recipes.py --quick      # 2 cells, 1 seed, no sweep (about 10 minutes)
    python scripts/bench_recipes.py --smoke      # 1 tiny cell, what CI runs (no accuracy thresholds)
    python scripts/bench_recipes.py --cells textures:mobilenet_v2:30 --contenders tlkit,keras_guide

Everything is built here and cached under --root (default ~/.cache/tlkit/bench_recipes):
- each transfer pair's source task (tlkit.data.tasks: digits, glyphs, shapes, textures) pretrains
  each backbone once (tlkit.model.pretrain, 32 px), saved as a weights file;
- each cell (pair, backbone, images per class) and seed draws its target train set (the val and
  test sets are the same for every seed and budget) and writes it as class folders.
Every contender gets the same weights file and the same folders, and runs in its own process:
  tlkit         `python train.py backbone=B backbone.weights=FILE data=folder data.train_dir=...
                data.val_dir=... data.test_dir=...` and nothing else (the default recipe)
  keras_guide, linear_probe, fastai, scratch    scripts/recipe_peers.py
  ceiling       the best of a small tlkit sweep (SWEEP, the default among them), per cell
Results go to ROOT/results.jsonl (a rerun skips what is there), then a Markdown report to
stdout and ROOT/report.md: per cell the mean val accuracy over the seeds (test accuracy beside
it), the default's wins/ties/losses against each peer (a tie: within one validation image,
averaged over the seeds), its median gap to the ceiling, and wall times.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from bench_common import machine  # noqa: E402

SIZE = 32
VAL_PER_CLASS, TEST_PER_CLASS = 30, 30
PEERS = ("keras_guide", "linear_probe", "fastai", "scratch")
# The ceiling: the best of a small tlkit sweep around the default (which is one of its points), per cell; each
# entry is a list of train.py overrides: the fine-tune LR at 0.3x the default's (optimizer.lr, so that a large
# backbone's 0.3x lr_scale goes to 0.09x), and twice the fine-tuning steps. The lr_0.3 rows of MobileNetV2 and
# EfficientNetB0 were run as schedule.stages.1.lr_scale=0.3, the same peak LR there.
SWEEP = {
    "default": [],
    "lr_0.3": ["optimizer.lr=3e-4"],
    "steps_x2": ["auto.finetune_steps=600"],
}


@dataclass(frozen=True)
class Cell:
    pair: str
    backbone: str
    per_class: int

    @property
    def key(self) -> str:
        return f"{self.pair}:{self.backbone}:{self.per_class}"


def _cells(spec: str) -> list[Cell]:
    cells = []
    for item in spec.split(","):
        pair, backbone, per_class = item.strip().split(":")
        cells.append(Cell(pair, backbone, int(per_class)))
    return cells


# Every pair on MobileNetV2 at 30 images per class (the held-out tasks' size); ResNet50, EfficientNetB0 and VGG16 on
# one pair each; glyphs at 10 and 100 images per class. --extended adds the other pairs on ResNet50 and the
# remaining budgets.
MATRIX = _cells(
    "digits:mobilenet_v2:30,glyphs:mobilenet_v2:30,textures:mobilenet_v2:30,shapes:mobilenet_v2:30,"
    "digits:resnet50:30,shapes:efficientnet_b0:30,digits:vgg16:30,glyphs:mobilenet_v2:10,glyphs:mobilenet_v2:100")
EXTENDED = _cells(
    "glyphs:resnet50:30,textures:resnet50:30,shapes:resnet50:30,glyphs:mobilenet_v2:300,digits:resnet50:10,"
    "digits:resnet50:100,shapes:efficientnet_b0:10,shapes:efficientnet_b0:100,digits:vgg16:10,digits:vgg16:100")
QUICK = _cells("glyphs:mobilenet_v2:30,textures:mobilenet_v2:30")
QUICK_CONTENDERS = ("tlkit", *PEERS)  # no sweep: the ceiling needs the full run
SMOKE = _cells("digits:mobilenet_v2:10")
SMOKE_CONTENDERS = ("tlkit", "keras_guide", "linear_probe")
SMOKE_OVERRIDES = ["auto.finetune_steps=20"]  # CI: the default recipe, shortened; pretraining is 1 epoch


# --------------------------------------------------------------------------- building the tasks


def pretrained_weights(root: Path, pair_name: str, backbone: str, epochs: int | None = None) -> Path:
    """The backbone pretrained on the pair's source task (tlkit.model.pretrain, what backbone.weights=tlkit:PAIR makes), in
    ROOT/weights: made once, in its own process, then reused."""
    from tlkit.model.pretrain import weights_file_name

    path = root / "weights" / weights_file_name(backbone, pair_name, SIZE)
    if path.exists():
        return path
    started = time.time()
    proc = _python([str(ROOT / "scripts" / "bench_recipes.py"), "--pretrain", pair_name, backbone, str(root / "weights"),
                    str(epochs or 0)])
    print(proc.stdout.strip().splitlines()[-1], flush=True)
    print(f"pretrained {backbone} on {pair_name}'s source task in {time.time() - started:.0f} s -> {path}", flush=True)
    return path


def _pretrain_here(pair_name: str, backbone: str, folder: str, epochs: int) -> None:
    from tlkit.backbones import get_spec
    from tlkit.model.pretrain import ensure_pretrained

    path = ensure_pretrained(get_spec(backbone), pair_name, root=folder, epochs=epochs or None)
    print(json.dumps({"pretrain": pair_name, "backbone": backbone, "path": str(path)}), flush=True)


def task_folders(root: Path, cell: Cell, seed: int) -> Path:
    """ROOT/tasks/PAIR_N_sSEED/{train,val,test}/CLASS/*.png, written once."""
    from tlkit.data.tasks import PAIRS, target_split, write_folders

    folder = root / "tasks" / f"{cell.pair}_{cell.per_class}_s{seed}"
    if (folder / "done").exists():
        return folder
    pair = PAIRS[cell.pair]
    splits = target_split(pair, cell.per_class, VAL_PER_CLASS, TEST_PER_CLASS, seed)
    for name, split in zip(("train", "val", "test"), splits):
        write_folders(folder / name, split, pair.target_classes)
    (folder / "done").write_text("")
    return folder


# --------------------------------------------------------------------------- running the contenders


def _python(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


EXTRA_OVERRIDES: list[str] = []  # --smoke: SMOKE_OVERRIDES on every tlkit run


def run_tlkit(cell: Cell, task: Path, weights: Path, seed: int, run_dir: Path, overrides: list[str]) -> dict:
    command = [str(ROOT / "train.py"), f"backbone={cell.backbone}", f"backbone.weights={weights}", "data=folder",
               f"data.train_dir={task / 'train'}", f"data.val_dir={task / 'val'}", f"data.test_dir={task / 'test'}",
               f"seed={seed}", "trainer.verbose=0", *EXTRA_OVERRIDES, *overrides, f"hydra.run.dir={run_dir}"]
    started = time.time()
    _python(command)
    wall = time.time() - started
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"val_accuracy": metrics["val_accuracy"], "test_accuracy": metrics.get("test_accuracy"),
            "wall_s": round(wall, 2), "epochs": metrics.get("epochs"), "stages": [
                {k: s.get(k) for k in ("name", "epochs_run", "best_epoch", "val_accuracy")} for s in metrics["stages"]],
            "recipe": metrics.get("recipe")}


def run_peer(peer: str, cell: Cell, task: Path, weights: Path, seed: int, out: Path) -> dict:
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    _python([str(ROOT / "scripts" / "recipe_peers.py"), peer, "--backbone", cell.backbone, "--weights", str(weights),
             "--task", str(task), "--size", str(SIZE), "--seed", str(seed), "--json", str(out)])
    result = json.loads(out.read_text())
    result["wall_s"] = round(time.time() - started, 2)
    return result


def contenders(names: list[str]) -> list[tuple[str, list[str] | None]]:
    """(name, overrides) for tlkit runs, (name, None) for peers; 'ceiling' expands to the sweep."""
    chosen = []
    for name in names:
        if name == "tlkit":
            chosen.append(("tlkit", []))
        elif name == "ceiling":
            chosen.extend((f"sweep:{k}", v) for k, v in SWEEP.items() if k != "default")
        elif name in PEERS:
            chosen.append((name, None))
        else:
            raise SystemExit(f"unknown contender {name!r}: tlkit, ceiling or one of {', '.join(PEERS)}")
    return chosen


def load_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_matrix(root: Path, cells: list[Cell], seeds: list[int], names: list[str], results_file: Path,
               pretrain_epochs: int | None = None) -> None:
    done = {(r["cell"], r["seed"], r["contender"]) for r in load_results(results_file) if not r.get("failed")}
    for cell in cells:
        weights = pretrained_weights(root, cell.pair, cell.backbone, pretrain_epochs)
        for seed in seeds:
            task = task_folders(root, cell, seed)
            for name, overrides in contenders(names):
                if (cell.key, seed, name) in done:
                    continue
                tag = f"{cell.pair}_{cell.backbone}_{cell.per_class}_s{seed}_{name.replace(':', '-')}"
                try:
                    if overrides is None:
                        result = run_peer(name, cell, task, weights, seed, root / "runs" / f"{tag}.json")
                    else:
                        result = run_tlkit(cell, task, weights, seed, root / "runs" / tag, overrides)
                except RuntimeError as error:
                    print(f"FAILED {cell.key} seed {seed} {name}: {error}", flush=True)
                    result = {"failed": str(error)[-500:]}
                row = {"cell": cell.key, "seed": seed, "contender": name, **result}
                with results_file.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps({k: row.get(k) for k in ("cell", "seed", "contender", "val_accuracy",
                                                            "test_accuracy", "wall_s")}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 cells, 1 seed, no sweep (about 10 minutes)")
    parser.add_argument("--extended", action="store_true", help="the matrix and the remaining label budgets")
    parser.add_argument("--smoke", action="store_true", help="1 tiny cell, 1 seed, short pretraining (CI)")
    parser.add_argument("--cells", default=None, help="PAIR:BACKBONE:PER_CLASS,... (default: the matrix)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--contenders", default=None, help="tlkit, the peers, ceiling (default: all of them)")
    parser.add_argument("--root", default=os.path.expanduser("~/.cache/tlkit/bench_recipes"))
    parser.add_argument("--results", default=None, help="results file (default ROOT/results.jsonl)")
    parser.add_argument("--pretrain", nargs=4, metavar=("PAIR", "BACKBONE", "FOLDER", "EPOCHS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pretrain:
        pair, backbone, path, epochs = args.pretrain
        return _pretrain_here(pair, backbone, path, int(epochs))
    from bench_recipes_report import report

    cells = (_cells(args.cells) if args.cells else SMOKE if args.smoke else QUICK if args.quick
             else MATRIX + EXTENDED if args.extended else MATRIX)
    seeds = args.seeds or ([0] if args.quick or args.smoke else [0, 1])
    names = (args.contenders.split(",") if args.contenders else list(SMOKE_CONTENDERS) if args.smoke
             else list(QUICK_CONTENDERS) if args.quick else ["tlkit", *PEERS, "ceiling"])
    root = Path(args.root)
    if args.smoke:
        root = root / "smoke"
        EXTRA_OVERRIDES.extend(SMOKE_OVERRIDES)
    root.mkdir(parents=True, exist_ok=True)
    results_file = Path(args.results) if args.results else root / "results.jsonl"
    started = time.time()
    run_matrix(root, cells, seeds, names, results_file, pretrain_epochs=1 if args.smoke else None)
    text = report(load_results(results_file), cells, seeds, machine(), time.time() - started)
    (root / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
