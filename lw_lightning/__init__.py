"""lw-lightning: adaptive-computation vision transformers (LookWhere, TokenLearner/ViViT) on PyTorch Lightning."""

__version__ = "0.1.0"
