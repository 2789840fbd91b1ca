"""mlattack: semantic-aware adversarial attacks on multi-label image classifiers."""

__version__ = "0.1.0"
