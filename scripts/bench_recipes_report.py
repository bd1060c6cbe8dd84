"""The Markdown report of scripts/bench_recipes.py: per-cell table, wins/ties/losses, gap to the ceiling."""
from __future__ import annotations

import statistics
from collections import defaultdict

from bench_recipes import PEERS, VAL_PER_CLASS

DEFAULT = "tlkit"
SLACK = 1e-6  # peers report float32 accuracies: exactly one image apart must read as a tie


def _num_val(cell_key: str) -> int:
    from tlkit.data.tasks import PAIRS

    return len(PAIRS[cell_key.split(":")[0]].target_classes) * VAL_PER_CLASS


def summarise(results: list[dict], cells, seeds) -> dict:
    """{cell: {contender: {val, test, wall, n}}} over the seeds asked for (failed runs left out)."""
    table: dict = defaultdict(dict)
    by = defaultdict(list)
    for r in results:
        if r.get("failed") is None and r["seed"] in seeds:
            by[(r["cell"], r["contender"])].append(r)
    for cell in cells:
        for (key, contender), rows in by.items():
            if key != cell.key:
                continue
            tests = [r["test_accuracy"] for r in rows if r.get("test_accuracy") is not None]
            table[cell.key][contender] = {
                "val": statistics.mean(r["val_accuracy"] for r in rows),
                "val_runs": [round(r["val_accuracy"], 4) for r in rows],
                "test": statistics.mean(tests) if tests else None,
                "wall": statistics.mean(r["wall_s"] for r in rows), "n": len(rows)}
        sweep = {c: v for c, v in table[cell.key].items() if c == DEFAULT or c.startswith("sweep:")}
        if any(c.startswith("sweep:") for c in sweep):  # the default alone is no ceiling
            best = max(sweep, key=lambda c: sweep[c]["val"])
            table[cell.key]["ceiling"] = {**sweep[best], "from": best}
    return table


def verdicts(table: dict) -> dict:
    """{peer: [wins, ties, losses]} of the default against each peer and the ceiling."""
    counts = {peer: [0, 0, 0] for peer in (*PEERS, "ceiling")}
    for cell_key, row in table.items():
        if DEFAULT not in row:
            continue
        one_image = 1.0 / _num_val(cell_key)
        for peer in counts:
            if peer not in row:
                continue
            gap = row[DEFAULT]["val"] - row[peer]["val"]
            counts[peer][0 if gap > one_image + SLACK else 2 if gap < -one_image - SLACK else 1] += 1
    return counts


def report(results: list[dict], cells, seeds, machine: str, seconds: float) -> str:
    table = summarise(results, cells, seeds)
    columns = [DEFAULT, *PEERS, "ceiling"]
    lines = [f"Machine: {machine}; seeds {seeds}; this invocation {seconds / 60:.1f} min.", "",
             "Mean val accuracy over the seeds (test accuracy in brackets); wall time of the whole process in s.", "",
             "| pair | backbone | per class | " + " | ".join(columns) + " | tlkit s | guide s | ÷ guide |",
             "|---|---|---|" + "---|" * len(columns) + "---|---|---|"]
    gaps, ratios = [], []
    for cell in cells:
        row = table.get(cell.key, {})
        cells_text = []
        for c in columns:
            entry = row.get(c)
            if entry is None:
                cells_text.append("–")
                continue
            test = f" ({entry['test']:.3f})" if entry.get("test") is not None else ""
            source = f" [{entry['from'].removeprefix('sweep:')}]" if c == "ceiling" else ""
            cells_text.append(f"{entry['val']:.3f}{test}{source}")
        ours, guide = row.get(DEFAULT), row.get("keras_guide")
        if ours and "ceiling" in row:
            gaps.append(row["ceiling"]["val"] - ours["val"])
        ratio = ours["wall"] / guide["wall"] if ours and guide else None
        if ratio:
            ratios.append(ratio)
        times = [f"{ours['wall']:.0f}" if ours else "–", f"{guide['wall']:.0f}" if guide else "–",
                 f"{ratio:.2f}" if ratio else "–"]
        lines.append(f"| {cell.pair} | {cell.backbone} | {cell.per_class} | " + " | ".join(cells_text + times) + " |")
    counts = verdicts(table)
    lines += ["", "The default against each contender (wins / ties / losses over the cells; a tie is a mean "
              "difference within one validation image):", "",
              "| contender | wins | ties | losses |", "|---|---|---|---|"]
    lines += [f"| {peer} | {w} | {t} | {l} |" for peer, (w, t, l) in counts.items()]
    if gaps:
        lines += ["", f"Median gap to the ceiling: {statistics.median(gaps) * 100:.2f} points "
                      f"(max {max(gaps) * 100:.2f}) over {len(gaps)} cells."]
    if ratios:
        lines += [f"Wall time ÷ the Keras guide: median {statistics.median(ratios):.2f} "
                  f"(range {min(ratios):.2f}-{max(ratios):.2f})."]
    return "\n".join(lines) + "\n"
