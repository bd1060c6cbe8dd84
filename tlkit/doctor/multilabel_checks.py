"""The doctor's multi-label checks (task=multilabel), on the loaded labels (DataBundle.train_labels / val_labels).

The single-label mistake the other way round (a table with "a;b" rows trained with task=single_label) never gets
here: the table check refuses it before TensorFlow starts, naming the rows and the key `task`
(tlkit.data.table.parse_rows).
"""
from __future__ import annotations

import numpy as np

from tlkit.doctor.findings import Finding, Severity


def diagnose_multilabel(cfg, data) -> list[Finding]:
    """Findings about multi-hot labels: cardinality (always said), never two labels per image, classes without
    positives in train (error: nothing to learn) or val (warning: no AP, no tuned threshold)."""
    train, val = np.asarray(data.train_labels), np.asarray(data.val_labels)
    names = list(data.class_names)
    per_image = train.sum(axis=1)
    findings = [Finding(
        "label-cardinality", Severity.info,
        f"{per_image.mean():.2f} labels per training image on average (min {int(per_image.min())}, max "
        f"{int(per_image.max())}; {(per_image == 0).mean():.0%} with none); positives per class: "
        + ", ".join(f"{n} {int(c)}" for n, c in zip(names, train.sum(axis=0))),
        "nothing to fix")]
    if per_image.max() <= 1 and (val.sum(axis=1).max() if len(val) else 0) <= 1:
        findings.append(Finding(
            "multilabel-one-label-per-image", Severity.warning,
            f"task=multilabel, but no image of train or val has two labels: with one class per image a softmax "
            f"(task=single_label) is the right model; sigmoids here treat the classes as independent.",
            "task=single_label (or check the label column and its ';' separator)"))
    for split, labels in (("train", train), ("val", val)):
        empty = [n for n, c in zip(names, labels.sum(axis=0)) if c == 0] if len(labels) else names
        if empty:
            findings.append(Finding(
                "class-without-positives", Severity.error if split == "train" else Severity.warning,
                f"classes {empty} have no positive image in {split}: "
                + ("the model cannot learn them (their sigmoid only learns to say no)." if split == "train" else
                   "their AP is undefined and their threshold cannot be tuned (it stays 0.5)."),
                "add images of those classes, or remove them from the table (data.label_columns)"))
    return findings
