"""Fine-tuning methods beyond freeze-then-unfreeze: discriminative LRs, L2-SP, EMA of weights.

LP-FT is a schedule (tlkit/conf/schedule/lp_ft.yaml); label smoothing lives in tlkit.training.optim.make_loss.
"""
from tlkit.training.methods.fine_tuning import FineTuning, block_lr_scales
from tlkit.training.methods.optimizer import FineTuningOptimizer, inner_optimizer, lr_groups_of, with_fine_tuning

__all__ = ["FineTuning", "FineTuningOptimizer", "block_lr_scales", "inner_optimizer", "lr_groups_of",
           "with_fine_tuning"]
