"""``python -m advtrain ...`` (also what ``torchrun -m advtrain`` runs)."""
import sys

from advtrain.cli import main

sys.exit(main())
