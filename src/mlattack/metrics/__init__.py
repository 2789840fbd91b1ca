"""mlattack.metrics."""
