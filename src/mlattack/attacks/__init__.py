"""mlattack.attacks."""
