"""The doctor's runtime monitor: watches one stage's losses and says what went wrong, and why.

One RuntimeMonitor per stage (per model.fit), next to BestWeights in the callback list. It reads
only the logs Keras passes to callbacks, so it is backend-neutral. It stops the stage on an
error (NaN loss, divergence) and only records warnings (val-loss spike, plateau at chance level).

Reference points, in nats of cross-entropy:
  - chance level is log(N): a zero-initialised head (head.zero_init, the default) starts exactly there;
  - the stage's starting loss is the loss of its first batch (computed before the first update).
"""
from __future__ import annotations

import logging
import math

import keras

from tlkit.doctor.findings import Finding, Severity

log = logging.getLogger("tlkit.doctor")

# Divergence, rule 1 ("runaway"): the epoch's train loss is above a ceiling for 2 epochs in a row. The
# ceiling is max(2·log N, starting loss + log N): twice chance means the model is confidently wrong, and
# the second term lets a head that starts high (a random, non-zero init) come down without a false alarm.
# One epoch above it can be an overshoot in the first steps; two in a row is not (a Case 1 replica, Adam
# lr=0.1, batch 1, unscaled inputs, N=4: ~180 for both epochs, against a ceiling of 2.8).
RUNAWAY_EPOCHS = 2
# ...unless the loss is still falling fast: a head on large features can overshoot to 3x chance in its
# first epoch and halve every epoch after (measured: 7.2 -> 3.3 -> ... on random ResNet50 features).
RUNAWAY_STILL_FALLING = 0.7  # the last epoch 30% below the one before: recovering, not diverging
# Divergence, rule 2 ("steady rise"), for a rise that stays below the ceiling (a fine-tune LR too high):
# 3 rises in a row, each by more than 2% and 0.01 nats, so the epoch-to-epoch noise of a converged run
# (well under 1% on any but the tiniest data set) never adds up to it.
RISES_IN_A_ROW = 3
MIN_RISE_FRACTION, MIN_RISE_NATS = 0.02, 0.01
# ...and only when the loss has climbed back to a third of chance: a fitted training set's loss of 0.02 -> 0.05
# -> 0.07 -> 0.10 (5 classes: chance 1.61) is noise around zero, not divergence (seen on the quickstart).
RISE_MATTERS_ABOVE = 1 / 3
# ...and only once the loss stands well above the lowest this stage reached: a small set's fine-tune (9 steps an
# epoch, augmented) drifts up for 3 epochs by chance while its val accuracy still climbs (MobileNetV2 glyphs at 30 per
# class: 0.561 -> 0.652, 1.16x its lowest; stopped and retried it ended at 0.547, left alone at 0.813). Where the rise
# went past 2x, stopping was right (ResNet50 digits 2.05x: 0.960 retried vs 0.953 left alone; MobileNetV2 glyphs at
# 10 per class 2.25x: 0.453 vs 0.260, never above the head). BENCHMARKS.md section 7.
RISE_OVER_LOWEST = 1.5
# Val-loss spike: val_loss above 1.5× the best so far (this stage's, or the previous stage's best), and
# at least 0.05 nats above it, so a small validation set's noise at a low loss is not a spike.
SPIKE_RATIO, MIN_SPIKE_NATS = 1.5, 0.05
# Plateau: after 2 epochs, an epoch's train loss still within 2% of log(N). A model that learns anything,
# even only the class priors of an imbalanced set, leaves that band early: a slow learner measured here
# (digits on frozen random features, Adam 1e-2) was 4% below chance after 1 epoch and 13% after 2.
PLATEAU_AFTER_EPOCHS, PLATEAU_BAND = 2, 0.02
# Collapse: a stage that trains backbone blocks, started from a model well above chance, whose val accuracy sits at
# chance for 4 epochs in a row: the first steps at the peak LR pushed the unfrozen blocks somewhere training does not
# bring them back from (seen at Adam 1e-3 on MobileNetV2 glyphs and ResNet50 digits: chance for all 34 epochs).
COLLAPSE_EPOCHS, COLLAPSE_ABOVE_CHANCE, STARTED_ABOVE_CHANCE = 4, 0.05, 0.15
# ...and, from a weaker start (a head only a little above chance), a stage whose val accuracy AND training accuracy
# both sit at chance for 6 epochs after the warmup: it no longer fits even its own training images (MobileNetV2,
# glyphs at 10 images per class: probe head 0.26, chance 0.20, the fine-tune at chance on both for all 35 epochs
# after its warmup, where 0.3x the LR with BatchNorm re-estimated reached 0.33-0.41). The far pairs' slow starts
# stayed below this (shapes: after its warmup, train accuracy at chance for at most 2 epochs in a row; BENCHMARKS.md 7).
COLLAPSE_TRAIN_EPOCHS, COLLAPSE_LOSS_SHARE = 6, 0.95  # ...with the training loss still at >= 95% of log N
# Divergence and collapse are judged on the epochs after a stage's LR warmup only: while the LR climbs to its peak
# the loss of a freshly unfrozen backbone is expected to rise, and the recipe's stages recover from it. Stopping
# there cost accuracy: MobileNetV2 on digits (150 steps) was stopped at epoch 5 of a 3.3-epoch warmup (loss 1.15 ->
# 1.58, val accuracy rising to 0.87), and its retry at 0.3x the LR ended at 0.87 where the uninterrupted 300-step
# stage reaches 0.99 (BENCHMARKS.md 7). NaN losses stop a stage at any time.

_LOWER_LR = ("a 10× lower LR: optimizer.lr={lr} (the first stage) or schedule.stages.N.lr_scale=0.1 (this "
             "stage only); optimizer.clipnorm=1.0 also caps single bad steps")


class RuntimeMonitor(keras.callbacks.Callback):
    """Diagnoses a stage while it trains: `diagnoses` lists what it saw, `stopped` says if it ended the stage."""

    def __init__(self, stage_name: str, num_classes: int, trains_backbone: bool,
                 reference_val_loss: float | None = None, batchnorm_trains: bool = False,
                 reference_val_accuracy: float | None = None, warmup_epochs: float = 0.0):
        super().__init__()
        self.warmup_epochs = math.ceil(max(warmup_epochs, 0.0))  # epochs of the stage that its LR warmup reaches into
        self.stage_name = stage_name
        self.batchnorm_trains = batchnorm_trains  # schedule.bn=train: a val-loss spike may be statistics drifting
        self.reference_val_accuracy = reference_val_accuracy  # the best val accuracy before this stage
        self.num_classes = num_classes
        self.trains_backbone = trains_backbone
        self.reference_val_loss = reference_val_loss
        self.chance_loss = math.log(max(num_classes, 2))
        self._reset()

    def _reset(self) -> None:
        self.diagnoses: list[Finding] = []
        self.stopped = False
        self._epochs_of: list[int | None] = []  # the 1-based epoch of each diagnosis
        self._start_loss: float | None = None
        self._train_losses: list[float] = []  # per epoch of this stage
        self._best_val_loss: float | None = None
        self._at_chance = 0  # epochs in a row with val accuracy at chance
        self._seen: set[str] = set()
        self._epoch: int | None = None  # 1-based, counted over the run like train.log

    def state(self) -> dict:
        """What a checkpoint keeps, so a resumed stage judges its epochs as an uninterrupted one would."""
        return {"diagnoses": [f.to_dict() for f in self.diagnoses], "epochs_of": self._epochs_of,
                "stopped": self.stopped, "start_loss": self._start_loss, "train_losses": self._train_losses,
                "best_val_loss": self._best_val_loss, "seen": sorted(self._seen), "at_chance": self._at_chance}

    def restore(self, state: dict) -> None:
        self.diagnoses = [Finding(d["id"], Severity(d["severity"]), d["message"], d["fix"]) for d in state["diagnoses"]]
        self._epochs_of, self.stopped = list(state["epochs_of"]), state["stopped"]
        self._start_loss, self._train_losses = state["start_loss"], list(state["train_losses"])
        self._best_val_loss, self._seen = state["best_val_loss"], set(state["seen"])
        self._at_chance = state.get("at_chance", 0)
        self._restored = True

    # ---- Keras hooks ------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        if not getattr(self, "_restored", False):  # a resumed stage keeps what it saw before the kill
            self._reset()
        self._restored = False

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1  # Keras counts epochs over the whole run (initial_epoch)

    def on_train_batch_end(self, batch, logs=None):
        if self.stopped or not logs or "loss" not in logs:
            return
        loss = float(logs["loss"])  # Keras's running mean over the epoch so far
        if self._start_loss is None and math.isfinite(loss):
            self._start_loss = loss
        if not math.isfinite(loss):
            self._nan_loss(loss, batch)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._epoch = epoch + 1
        if self.stopped or "loss" not in logs:
            return
        loss = float(logs["loss"])
        if not math.isfinite(loss):  # no batch logs reached us (or only the epoch mean overflowed)
            self._nan_loss(loss, None)
            return
        if self._start_loss is None:
            self._start_loss = loss
        self._train_losses.append(loss)
        if len(self._train_losses) > self.warmup_epochs:
            self._check_divergence()
        self._check_plateau()
        if "val_loss" in logs:
            self._check_val_spike(float(logs["val_loss"]))
        if "val_accuracy" in logs:
            train_accuracy = logs.get("accuracy")
            self._check_collapse(float(logs["val_accuracy"]), None if train_accuracy is None else float(train_accuracy))

    # ---- rules ------------------------------------------------------------------------------
    def _nan_loss(self, loss: float, batch: int | None) -> None:
        where = f"epoch {self._epoch}" if batch is None else f"epoch {self._epoch}, batch {batch + 1}"
        self._diagnose(
            "nan-loss", Severity.error,
            f"training loss became {loss} at {where} of stage '{self.stage_name}'{self._lr_text()}; the stage "
            "was stopped. Likely causes: an LR too high for this stage (the weights overflowed), NaN or Inf "
            "pixels in the input images, or wrong preprocessing feeding huge values to the backbone.",
            _LOWER_LR.format(lr=self._lower_lr()) + "; backbone.preprocess=auto; check the images for NaN/Inf",
            stop=True,
        )

    def _check_divergence(self) -> None:
        # The epochs after the warmup (and the last warmup epoch as the base of the first rise).
        losses = self._train_losses[max(self.warmup_epochs - 1, 0):]
        ceiling = max(2 * self.chance_loss, self._start_loss + self.chance_loss)
        recent = self._train_losses[self.warmup_epochs:][-RUNAWAY_EPOCHS:]
        if (len(recent) == RUNAWAY_EPOCHS and all(v > ceiling for v in recent)
                and not recent[-1] < RUNAWAY_STILL_FALLING * recent[-2]):
            message = (
                f"train loss {_arrow(recent)} over the last {RUNAWAY_EPOCHS} epochs is far above chance level "
                f"(log {self.num_classes} = {self.chance_loss:.3g}; the stage started at {self._start_loss:.3g}): "
                "the model is confidently wrong."
            )
        elif (len(losses) > RISES_IN_A_ROW and losses[-1] > RISE_MATTERS_ABOVE * self.chance_loss
              and losses[-1] >= RISE_OVER_LOWEST * min(self._train_losses)) and all(
            b > a * (1 + MIN_RISE_FRACTION) and b - a > MIN_RISE_NATS
            for a, b in zip(losses[-RISES_IN_A_ROW - 1:], losses[-RISES_IN_A_ROW:])
        ):
            message = f"train loss rose {RISES_IN_A_ROW} epochs in a row: {_arrow(losses[-RISES_IN_A_ROW - 1:])}."
        else:
            return
        self._diagnose(
            "loss-diverging", Severity.error,
            f"{message} Stage '{self.stage_name}' was stopped at epoch {self._epoch}{self._lr_text()}. Likely "
            "causes: an LR too high for this stage (tiny batches, e.g. batch size 1, make it worse), or "
            "unpreprocessed inputs (0-255 pixels where the backbone expects its own preprocessing) giving huge "
            "features.",
            _LOWER_LR.format(lr=self._lower_lr()) + "; backbone.preprocess=auto; data.batch_size=32",
            stop=True,
        )

    def _check_val_spike(self, val_loss: float) -> None:
        best = [v for v in (self.reference_val_loss, self._best_val_loss) if v is not None and math.isfinite(v)]
        if math.isfinite(val_loss) and (self._best_val_loss is None or val_loss < self._best_val_loss):
            self._best_val_loss = val_loss  # updated after reading `best`: a spike is judged against the past
        if not self.trains_backbone or not best or "val-loss-spike" in self._seen:
            return
        baseline = min(best)
        previous_train = self._train_losses[-2] if len(self._train_losses) > 1 else self._start_loss
        train_falling = self._train_losses[-1] < previous_train
        spiked = not math.isfinite(val_loss) or (
            val_loss > SPIKE_RATIO * baseline and val_loss - baseline > MIN_SPIKE_NATS)
        if not (spiked and train_falling):
            return  # both rising is plain divergence or overfitting, not this
        ratio = val_loss / baseline if baseline > 0 else math.inf
        text = (f"val_loss jumped to {val_loss:.4g} at epoch {self._epoch} of stage '{self.stage_name}', "
                f"{ratio:.3g}× the best so far ({baseline:.4g}), while the train loss kept falling "
                f"({previous_train:.4g} → {self._train_losses[-1]:.4g}){self._lr_text()}.")
        if self.batchnorm_trains:  # a warning: BatchNorm statistics drifting on small batches is a known cause
            self._diagnose("val-loss-spike", Severity.warning, text + " Typical of BatchNorm statistics drifting "
                           "on small batches (schedule.bn=train); the stage goes on, and the run keeps its best "
                           "epoch.", "schedule.bn=frozen")
        else:  # BatchNorm frozen: a fine-tune's early spike that the run usually recovers from (BENCHMARKS.md 7)
            self._diagnose("val-loss-spike", Severity.info, text + " Common in the first epochs after unfreezing "
                           "while the blocks adapt; the stage goes on, and the run keeps its best epoch.",
                           "none needed: the run keeps its best epoch")

    def _check_collapse(self, val_accuracy: float, train_accuracy: float | None = None) -> None:
        chance = 1.0 / max(self.num_classes, 2)
        reference = self.reference_val_accuracy
        if not self.trains_backbone or reference is None or len(self._train_losses) <= self.warmup_epochs:
            return
        well_above = reference >= chance + STARTED_ABOVE_CHANCE  # else only a training set at chance too counts
        # From a weak start: a head that was above chance at all, and a training loss back at log N or above (a model
        # that learns slowly, e.g. from random weights on many classes, has its loss falling below it)
        weak_collapse = (reference > chance + COLLAPSE_ABOVE_CHANCE and train_accuracy is not None
                         and train_accuracy <= chance + COLLAPSE_ABOVE_CHANCE
                         and self._train_losses[-1] >= COLLAPSE_LOSS_SHARE * self.chance_loss)
        at_chance = val_accuracy <= chance + COLLAPSE_ABOVE_CHANCE and (well_above or weak_collapse)
        self._at_chance = self._at_chance + 1 if at_chance else 0
        if self._at_chance < (COLLAPSE_EPOCHS if well_above else COLLAPSE_TRAIN_EPOCHS):
            return
        also = "" if well_above else f" (and training accuracy {train_accuracy:.3g})"
        self._diagnose(
            "collapsed-to-chance", Severity.error,
            f"val accuracy{also} has been at chance level ({val_accuracy:.3g}; chance {chance:.3g}) for {self._at_chance} "
            f"epochs of stage '{self.stage_name}', which started from a model at {reference:.3g}{self._lr_text()}: "
            "fine-tuning collapsed (the first steps at the peak LR moved the unfrozen blocks somewhere training "
            "does not bring them back from). The stage was stopped; the run keeps its best epoch.",
            "a gentler fine-tune: 0.3x this stage's schedule.stages.N.lr_scale, a longer warmup "
            "(schedule.stages.N.warmup_epochs), "
            "or schedule.bn=adapt; the default recipe retries the stage once that way by itself",
            stop=True,
        )

    def _check_plateau(self) -> None:
        # Every epoch so far at chance: a loss that fell from a spike (after unfreezing) and passes
        # through log(N) on its way down is learning, not stuck.
        at_chance = all(abs(loss - self.chance_loss) <= PLATEAU_BAND * self.chance_loss for loss in self._train_losses)
        if len(self._train_losses) < PLATEAU_AFTER_EPOCHS or not at_chance:
            return
        loss = self._train_losses[-1]
        self._diagnose(
            "plateau", Severity.warning,
            f"train loss is still {loss:.4g} after {len(self._train_losses)} epochs of stage '{self.stage_name}' "
            f"(epoch {self._epoch}), within {PLATEAU_BAND:.0%} of chance level log {self.num_classes} = "
            f"{self.chance_loss:.4g}: the model is not learning{self._lr_text()}. Likely causes: an LR far too low "
            "(or so high the head bounces around chance), labels not matching the images (shuffled separately), "
            "degenerate features (weights=null with BatchNorm, or every image alike after wrong preprocessing).",
            "optimizer.lr=1e-3 (Adam) or 1e-2 (SGD); backbone.preprocess=auto; check that labels follow the "
            "images; backbone.weights=imagenet",
        )

    # ---- helpers ----------------------------------------------------------------------------
    def _diagnose(self, finding_id: str, severity: Severity, message: str, fix: str, stop: bool = False) -> None:
        if finding_id in self._seen:
            return
        self._seen.add(finding_id)
        finding = Finding(finding_id, severity, message, fix)
        self.diagnoses.append(finding)
        self._epochs_of.append(self._epoch)
        level = logging.ERROR if severity == Severity.error else logging.WARNING
        log.log(level, "[%s] %s: %s\n    fix: %s", severity.value, finding_id, message, fix)
        if stop:
            self.stopped = True
            if self.model is not None:
                self.model.stop_training = True

    def summary(self) -> list[dict]:
        """Each diagnosis as Finding.to_dict(), plus the stage and the (1-based) epoch it was seen at."""
        return [{**f.to_dict(), "stage": self.stage_name, "epoch": e} for f, e in zip(self.diagnoses, self._epochs_of)]

    def _current_lr(self) -> float | None:
        try:
            return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        except Exception:  # no model or optimizer attached (logs fed by hand), or an exotic optimizer
            return None

    def _lr_text(self) -> str:
        lr = self._current_lr()
        return "" if lr is None else f" (learning rate {lr:.3g})"

    def _lower_lr(self) -> str:
        lr = self._current_lr()  # the LR at this step: after warmup/decay, not necessarily the peak
        return "1e-4" if not lr else f"{lr / 10:.3g}"


def _arrow(values: list[float]) -> str:
    return " → ".join(f"{v:.3g}" for v in values)
