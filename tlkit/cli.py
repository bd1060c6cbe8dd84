"""`tlkit` command line. Subcommands:

    tlkit backbones        the registered backbones and their input contracts
"""
from __future__ import annotations

import argparse
import sys

from tlkit.backbones.spec import all_specs


def backbones_table() -> str:
    header = ("name", "keras constructor", "preprocess", "size", "min", "features", "blocks (stem -> top)")
    rows = [header] + [
        (s.name, s.constructor, s.preprocess, str(s.default_size), str(s.min_size), str(s.features),
         " ".join(s.block_names))
        for s in all_specs()
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = ["  ".join([c.ljust(w) for c, w in zip(r[:-1], widths)] + [r[-1]]) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    notes = (
        "\nEvery model takes RGB images in 0-255; the preprocessing above runs inside the model.\n"
        "Freeze by blocks: schedule.stages.N.train=head | all | top:N | from:BLOCK"
    )
    return "\n".join(lines) + "\n" + notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tlkit", description="Transfer-learning recipes for Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("backbones", help="list the registered backbones and their input contracts")
    args = parser.parse_args(argv)
    if args.command == "backbones":
        print(backbones_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
