"""mlattack.experiments."""
