"""mlattack.data."""
