"""Evaluation: settings, AutoAttack (sharded), the accuracy loop, sanity flags, sweeps, corruptions, cards, report."""
