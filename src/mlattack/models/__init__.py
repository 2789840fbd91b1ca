"""mlattack.models."""
