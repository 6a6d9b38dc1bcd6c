"""Model files: the one loader, the RobustBench zoo, export."""
