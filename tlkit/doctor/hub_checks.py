"""Config-level findings for KerasHub transformer backbones (tlkit.backbones.hub): no TensorFlow, no keras_hub.

What differs from the CNNs: LayerNorm and no BatchNorm (schedule.bn does not apply), a patch grid instead of a
feature map (the image size in patches is what the transformer sees), and fine-tuning recipes built on AdamW with
layer-wise LR decay (BEiT, MAE: each layer below the top gets 0.65-0.75 x the LR of the one above).
"""
from __future__ import annotations

import math

from tlkit.backbones.hub import HubSpec, pretrained_sizes
from tlkit.config.schema import OptimizerName, TrainConfig
from tlkit.config.validate import resolved_image_size
from tlkit.doctor.findings import Finding, Severity

MIN_PATCHES_PER_SIDE = 4  # below 4 x 4 patches a transformer attends over almost nothing (ViT-B/16 at 224: 14 x 14)
# Typical fine-tuning of a pretrained ViT: AdamW, peak LR 1e-4 to 5e-4 at batch 512 (linearly less for smaller
# batches), weight decay 0.05, layer-wise decay 0.65-0.75 (BEiT, Bao et al. 2022; MAE, He et al. 2022).
SUGGESTED_LR_DECAY = 0.75


def diagnose_hub(cfg: TrainConfig, spec, trains_blocks: bool) -> list[Finding]:
    """The transformer facts of `spec` (a HubSpec; [] for any other), `trains_blocks`: some stage trains a block."""
    if not isinstance(spec, HubSpec):
        return []
    size = resolved_image_size(cfg, spec)
    grid = size // spec.patch_size
    pooling = "its class token" if spec.pooling == "cls" else "the mean over its tokens"
    findings = [Finding(
        "transformer-backbone", Severity.info,
        f"{spec.name} is a {spec.family} transformer ({spec.constructor}): LayerNorm, no BatchNorm, so schedule.bn "
        f"(frozen, adapt, train) does not apply; {size} px in patches of {spec.patch_size} is a {grid} x {grid} grid; "
        f"the head pools {pooling}.", "nothing to fix")]
    if grid < MIN_PATCHES_PER_SIDE:
        # twice the minimum grid, rounded up to a size the preset takes (Swin: a multiple of its size step)
        suggested = math.ceil(spec.patch_size * MIN_PATCHES_PER_SIDE * 2 / spec.size_step) * spec.size_step
        findings.append(Finding(
            "transformer-few-patches", Severity.warning,
            f"data.image_size={size} with {spec.name}'s {spec.patch_size} px patches gives {grid} x {grid} tokens: "
            "attention has almost nothing to relate, and the features are close to one patch embedding.",
            f"data.image_size={suggested}{' with backbone.weights=null' if spec.fixed_size else ''} ({spec.name}'s "
            f"pretrained weights take {pretrained_sizes(spec)})"))
    pretrained = cfg.backbone.weights is not None
    adamw = OptimizerName(cfg.optimizer.name) == OptimizerName.adamw
    if trains_blocks and pretrained and (not adamw or cfg.schedule.lr_decay is None):
        findings.append(Finding(
            "transformer-finetune-recipe", Severity.info,
            f"fine-tuning pretrained {spec.name}: transformer recipes use AdamW (peak LR 1e-4 to 5e-4 at batch 512, "
            f"scaled with the batch; weight decay 0.05) with layer-wise LR decay 0.65-0.75 (BEiT, MAE); this config "
            f"has optimizer={OptimizerName(cfg.optimizer.name).value}, schedule.lr_decay={cfg.schedule.lr_decay}.",
            f"optimizer=adamw optimizer.weight_decay=0.05 schedule.lr_decay={SUGGESTED_LR_DECAY}"))
    return findings
