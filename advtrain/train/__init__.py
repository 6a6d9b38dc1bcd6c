"""Training: the loop (loop.py) with its setup and step, the parts and their checkpoints, AWP, EMA, averaging, the teacher."""
