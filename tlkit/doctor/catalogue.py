"""Every finding the doctor can report: its id, severities, phase and what it means, in one place.

Pure Python and at the bottom of the package (it imports only tlkit.text_table), so config validation can refuse an
unknown id in `doctor.silence` before anything else is built. Each check in tlkit/doctor/ reports ids from here
(tests/test_doctor_catalogue.py reads the checks' source to hold them to it); `tlkit doctor --list` prints it.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from tlkit.text_table import text_table


class Severity(str, Enum):
    error = "error"  # training would fail or silently learn the wrong thing: the run stops
    warning = "warning"  # likely to cost accuracy or time: printed, logged, kept in metrics.json
    info = "info"  # worth knowing, nothing to fix


# When a finding is made: from the config alone (no TensorFlow), from a sample of the data, from the built model
# (before training), or by the runtime monitor during training.
PHASES = ("config", "data", "model", "runtime")


@dataclass(frozen=True)
class FindingKind:
    id: str  # stable, kebab-case: what doctor.silence takes
    severities: tuple[Severity, ...]  # every severity the checks give it (before doctor.strict), the usual first
    phases: tuple[str, ...]  # of PHASES
    meaning: str  # one line: what it means

    def __post_init__(self):
        if not self.severities or not set(self.phases) <= set(PHASES) or not self.phases:
            raise ValueError(f"finding {self.id!r}: severities {self.severities}, phases {self.phases}")


_E, _W, _I = Severity.error, Severity.warning, Severity.info

_KINDS = (
    # ---- config: tlkit/doctor/config_checks.py
    FindingKind("preprocess-explicit", (_I,), ("config",),
                "backbone.preprocess names the backbone's own mode; 'auto' picks it too and follows a backbone switch"),
    FindingKind("preprocess-override", (_E, _W), ("config",),
                "backbone.preprocess differs from the mode the backbone (and its weights) expects: silently wrong "
                "features"),
    FindingKind("no-pretrained-weights", (_I,), ("config",),
                "backbone.weights=null: training from scratch, not transfer learning"),
    FindingKind("random-frozen-backbone", (_W,), ("config",),
                "random weights and no stage trains a backbone block: the head learns from random features"),
    FindingKind("lr-too-high", (_W, _E), ("config",),
                "a stage's peak LR is above what its optimizer and what it trains tolerate: divergence or wrecked "
                "pretrained features"),
    FindingKind("lr-too-low", (_W,), ("config",),
                "a stage's peak LR is so low that it barely changes the weights in its epochs"),
    FindingKind("full-finetune-random-head", (_W, _I), ("config",),
                "the first stage fine-tunes pretrained blocks under an untrained head (LP-FT: train the head first)"),
    FindingKind("bn-train-no-effect", (_I,), ("config",),
                "schedule.bn=train changes nothing: no BatchNorm in the backbone, or no stage trains a block"),
    FindingKind("bn-train-small-batch", (_W, _E), ("config",),
                "schedule.bn=train with small batches: BatchNorm normalises with the statistics of too few images"),
    FindingKind("bn-train-pretrained", (_I,), ("config",),
                "schedule.bn=train re-estimates pretrained BatchNorm statistics; frozen is the usual choice"),
    FindingKind("small-batch", (_W,), ("config",),
                "data.batch_size=1: very noisy steps and one step per image"),
    FindingKind("image-size-below-min", (_E,), ("config",),
                "data.image_size is below the backbone's minimum (only for configs that skipped validation)"),
    FindingKind("image-size-far-from-pretrained", (_W,), ("config",),
                "data.image_size is far below or above the size the weights were trained at"),
    FindingKind("head-dropout-high", (_W,), ("config",),
                "head.dropout so high that the head learns from a small random subset of the features and underfits"),
    FindingKind("flip-changes-label", (_W,), ("config", "data"),
                "augment.flip=true where a mirrored image has another label: digits, or what the probe measured"),
    FindingKind("mixing-no-effect", (_W,), ("config",),
                "MixUp/CutMix with data.batch_size=1: no partner in the batch to mix with"),
    FindingKind("mixing-without-feature-cache", (_I, _W), ("config",),
                "MixUp/CutMix keeps head-only stages off the feature cache: they train through the frozen backbone"),
    # ---- data: tlkit/doctor/data_checks.py
    FindingKind("input-shape", (_E,), ("data",),
                "a training batch is not [batch, image_size, image_size, 3] RGB"),
    FindingKind("input-range", (_E,), ("data",),
                "a sample batch is not RGB 0-255: already scaled or normalised, above 255, or NaN/Inf"),
    FindingKind("constant-images", (_W,), ("data",),
                "sample images are a single flat value: blank or failed decodes"),
    FindingKind("label-format", (_E,), ("data",),
                "labels are not sparse integers in 0..N-1 (one-hot, or out of range)"),
    FindingKind("single-label", (_E,), ("data",),
                "every training image has the same label"),
    FindingKind("batch-larger-than-train-set", (_W,), ("data",),
                "data.batch_size is above the number of training images: one optimizer step per epoch"),
    FindingKind("too-few-images-per-class", (_I,), ("data",),
                "a class has few training images: few examples and noisy validation numbers"),
    FindingKind("class-imbalance", (_W,), ("data",),
                "classes of very different sizes with data.class_weight=none: the loss favours the large ones"),
    FindingKind("val-too-small", (_W, _E), ("data",),
                "too few validation images (none: error) for early stopping and best-epoch restore to mean much"),
    FindingKind("train-val-leakage", (_E,), ("data",),
                "byte-identical image files in two of train/val/test: validation rewards memorising"),
    # ---- data, task=multilabel: tlkit/doctor/multilabel_checks.py
    FindingKind("label-cardinality", (_I,), ("data",),
                "task=multilabel: labels per image (mean, min, max) and positives per class"),
    FindingKind("multilabel-one-label-per-image", (_W,), ("data",),
                "task=multilabel but no image has two labels: a softmax (task=single_label) is the right model"),
    FindingKind("class-without-positives", (_E, _W), ("data",),
                "task=multilabel: a class with no positive image in train (error) or val (warning)"),
    # ---- model: tlkit/doctor/model_checks.py
    FindingKind("degenerate-features", (_E, _W), ("model",),
                "the backbone's pooled features are NaN/Inf, ~0, alike across images or huge"),
    FindingKind("step0-loss", (_E, _W), ("model",),
                "the loss before training is NaN/Inf, or far above log(N) with a random head"),
    # ---- config: tlkit/doctor/hub_checks.py (KerasHub transformers)
    FindingKind("transformer-backbone", (_I,), ("config",),
                "a KerasHub transformer: LayerNorm and no BatchNorm (schedule.bn does not apply), its patch grid, "
                "its pooling"),
    FindingKind("transformer-few-patches", (_W,), ("config",),
                "the image is under 4 x 4 patches of the transformer: attention has almost nothing to relate"),
    FindingKind("transformer-finetune-recipe", (_I,), ("config",),
                "pretrained transformer blocks fine-tuned without AdamW and layer-wise LR decay (schedule.lr_decay)"),
    # ---- runtime: tlkit/doctor/monitor.py
    FindingKind("nan-loss", (_E,), ("runtime",),
                "the training loss became NaN or Inf: the stage stops"),
    FindingKind("loss-diverging", (_E,), ("runtime",),
                "after the warmup the train loss runs away above chance or rises epoch after epoch: the stage stops"),
    FindingKind("collapsed-to-chance", (_E,), ("runtime",),
                "a fine-tuning stage that started well above chance sits at chance accuracy: the stage stops"),
    FindingKind("val-loss-spike", (_W, _I), ("runtime",),
                "after unfreezing, the val loss jumps while the train loss falls (BatchNorm drift, or early "
                "adaptation)"),
    FindingKind("plateau", (_W,), ("runtime",),
                "the train loss stays at chance level: the model is not learning"),
)

CATALOGUE: dict[str, FindingKind] = {kind.id: kind for kind in _KINDS}
if len(CATALOGUE) != len(_KINDS):
    raise ValueError("a finding id is catalogued twice")
FINDING_IDS = tuple(CATALOGUE)


def catalogue_table() -> str:
    """The catalogue as a plain-text table: id, severity, phase, meaning (`tlkit doctor --list`)."""
    header = ("id", "severity", "phase", "meaning")
    return text_table(header, [(k.id, "/".join(s.value for s in k.severities), "+".join(k.phases), k.meaning)
                               for k in _KINDS])
