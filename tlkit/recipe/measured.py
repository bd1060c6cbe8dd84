"""The default recipe's decisions that wait for the built model: what the pretrained network measures on the data.

    decision   rule
    bn         BatchNorm frozen (inference mode); its statistics re-estimated on the training images first (AdaBN)
               when they are far from the stored ones: the median over the layers of |log(variance ratio)| above
               BN_SHIFT_ADAPT_ABOVE (decide_bn)
    schedule   far data (the statistics re-estimated) on a small data set: the fine-tuning stages the recipe sized
               get FAR_STEPS_FACTOR x its step budget (lengthen_for_far_data)
    flip       on when the probe classifies the validation images' mirror images about as well as the originals
               (decide_flip)

tlkit.training.run_setup calls apply_bn once the model is built and apply_flip after the probe; tlkit.recipe.auto
decided everything else before. Pure Python (no TensorFlow).
"""
from __future__ import annotations

import logging
import math
from dataclasses import replace

from tlkit.config.schema import BNPolicy, TrainConfig
from tlkit.recipe.auto import (FINETUNE_MIN_FRACTION, AutoRecipe, Decision, choose_finetune, finetune_steps,
                               decision_line)

log = logging.getLogger("tlkit.train")

# Re-estimate BatchNorm statistics on the target when its own differ this much from the stored ones (median over
# layers of mean |log(var_target / var_stored)|): near pairs measured 0.12-0.27, far ones 0.58-1.42 (BENCHMARKS 7).
BN_SHIFT_ADAPT_ABOVE = 0.4
# Far data needs a longer fine-tune: where the statistics were re-estimated (textures, shapes), twice the step
# budget was the best point of the matrix's sweep over two seeds (textures +9 and +22 points, shapes +5 and -1);
# where they were close (digits, glyphs) it gained nothing and cost glyphs 9 points on both seeds (BENCHMARKS 7).
# Small data only: where it was measured.
FAR_STEPS_FACTOR = 2
# Flips keep labels when the probe loses at most this much accuracy on mirrored validation images:
# max(FLIP_TOLERANCE_IMAGES images, FLIP_TOLERANCE_FRACTION of its accuracy).
FLIP_TOLERANCE_IMAGES, FLIP_TOLERANCE_FRACTION = 2, 0.05
# ...and only when the probe itself is clearly above chance: by 10 points and 3 standard errors of a guess.
FLIP_PROBE_ABOVE_CHANCE = 0.10


def decide_bn(shift: float) -> tuple[str, str]:
    """frozen or adapt, from how far the training images' BatchNorm statistics are from the stored ones."""
    adapt = shift > BN_SHIFT_ADAPT_ABOVE
    return ("adapt" if adapt else "frozen"), (
        f"the training images' BatchNorm variances differ from the stored ones by {shift:.2f} (median |log ratio|; "
        f"re-estimated above {BN_SHIFT_ADAPT_ABOVE:g}): " + ("far from what the weights saw, so the statistics are "
        "re-estimated on them (AdaBN), then frozen" if adapt else "close to what the weights saw, so the stored "
        "statistics are kept") + "; BatchNorm stays in inference mode while training")


def apply_bn(cfg: TrainConfig, recipe: AutoRecipe, shift: float) -> TrainConfig:
    """Once the model is built: schedule.bn decided from the measured statistics shift (when still null), and far
    data's longer fine-tune (lengthen_for_far_data)."""
    policy, reason = decide_bn(shift)
    recipe.bn_shift = shift
    recipe.decisions.append(Decision("bn", {"schedule.bn": policy}, reason))
    log.info("%s", decision_line(recipe.decisions[-1]))
    cfg = replace(cfg, schedule=replace(cfg.schedule, bn=BNPolicy(policy)))
    return lengthen_for_far_data(cfg, recipe) if policy == "adapt" else cfg


def lengthen_for_far_data(cfg: TrainConfig, recipe: AutoRecipe) -> TrainConfig:
    """The fine-tuning stages whose length the recipe chose, re-sized for FAR_STEPS_FACTOR x its step budget.

    Only on small data sets, and only where the rule sized the stage (its decision not kept): epochs you set,
    auto.keep=[schedule], auto.enabled=false or a budget you set (auto.finetune_steps) keep the length as it is.
    recipe.bn_shift: the shift apply_bn measured (None on resume: the interrupted run measured it)."""
    if recipe.regime != "small" or cfg.auto.finetune_steps is not None:
        return cfg
    base, base_reason = finetune_steps(recipe.facts.num_train)
    budget = (base * FAR_STEPS_FACTOR, f"{base_reason}, x {FAR_STEPS_FACTOR} = {base * FAR_STEPS_FACTOR:,} steps")
    why = (f"BatchNorm statistics {recipe.bn_shift:.2f} from the weights', re-estimated" if recipe.bn_shift is not None
           else "BatchNorm statistics re-estimated by the interrupted run")
    stages = list(cfg.schedule.stages)
    sized = {key for d in recipe.decisions if d.name == "schedule" and not d.kept for key in d.values}
    for index, stage in enumerate(stages):
        key = f"schedule.stages.{index}"
        if stage.train == "head" or f"{key}.epochs" not in sized:
            continue
        chosen, reason = choose_finetune(recipe.facts, cfg.data.batch_size, budget)
        changed = {"epochs": chosen["epochs"]}
        if f"{key}.warmup_epochs" in sized:
            changed["warmup_epochs"] = chosen["warmup_epochs"]
        if f"{key}.min_epochs" in sized:
            changed["min_epochs"] = math.ceil(FINETUNE_MIN_FRACTION * chosen["epochs"])
        if all(getattr(stage, k) == v for k, v in changed.items()):
            continue  # already at the epoch cap
        stages[index] = replace(stage, **changed)
        recipe.decisions.append(Decision("schedule", {f"{key}.{k}": v for k, v in changed.items()}, (
            f"stage '{stage.name}', far data ({why}): the features have more to relearn, so {FAR_STEPS_FACTOR}x the "
            f"step budget: {reason}")))
        log.info("%s", decision_line(recipe.decisions[-1]))
    return replace(cfg, schedule=replace(cfg.schedule, stages=stages))


def decide_flip(probe: dict) -> tuple[bool, str]:
    """Flips keep labels when mirrored validation images lose little of the probe's accuracy; off when the probe is
    too close to chance to tell (a weak probe classifies mirrored and plain images equally badly)."""
    plain, mirrored, num_val, chance = (probe["val_accuracy"], probe["flipped_val_accuracy"], probe["num_val"],
                                        probe["chance"])
    needed = chance + max(FLIP_PROBE_ABOVE_CHANCE, 3 * math.sqrt(chance * (1 - chance) / max(num_val, 1)))
    if plain < needed:
        return False, (f"off: the probe classifies {plain:.1%} of the {num_val} validation images, too close to chance "
                       f"({chance:.1%}; needs {needed:.1%}) to tell whether mirroring keeps their class")
    tolerance = max(FLIP_TOLERANCE_IMAGES / max(num_val, 1), FLIP_TOLERANCE_FRACTION * plain)
    drop = plain - mirrored
    verdict = drop <= tolerance
    return verdict, (f"the probe classifies {plain:.1%} of the {num_val} validation images and {mirrored:.1%} of their "
                     f"mirror images: " + ("a mirrored image keeps its class" if verdict else
                                           "mirroring changes what they show") +
                     f" (drop {drop:+.1%}, tolerance {tolerance:.1%})")


def apply_flip(cfg: TrainConfig, recipe: AutoRecipe, probe: dict) -> TrainConfig:
    """After the probe: augment.flip decided from it (when still null), recorded in `recipe`."""
    recipe.probe = probe
    if cfg.augment.flip is not None:
        return cfg
    flip, reason = decide_flip(probe)
    recipe.decisions.append(Decision("flip", {"augment.flip": flip}, reason))
    log.info("%s", decision_line(recipe.decisions[-1]))
    return replace(cfg, augment=replace(cfg.augment, flip=flip))
