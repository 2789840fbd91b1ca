"""mlattack.graph_sources."""
