"""Files in and out: the safe loader, atomic writers, names that become files."""
