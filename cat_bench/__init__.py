"""cat-bench: Calibrated Adversarial Training and its baselines on one training core."""

__version__ = "0.1.0"
