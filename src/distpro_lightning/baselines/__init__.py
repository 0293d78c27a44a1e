"""Fixed distillation methods to compare with: ReviewKD, and the paper's Table 1 recipes."""

from distpro_lightning.baselines.reviewkd import ReviewKDModule

__all__ = ["ReviewKDModule"]
