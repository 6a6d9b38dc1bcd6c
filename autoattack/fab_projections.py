"""Re-export of ``pyautoattack.fab_projections`` under the official module name (see ``autoattack``)."""
from pyautoattack.fab_projections import *  # noqa: F401,F403
