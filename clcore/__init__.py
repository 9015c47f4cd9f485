"""clcore: the science behind the brain-inspired continual-learning reproduction pipeline."""

__version__ = "0.1.0"
