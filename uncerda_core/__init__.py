"""uncerda: uncertainty-aware pseudo label refinery for domain-adaptive semantic segmentation."""

__version__ = "0.1.0"
