"""Re-export of ``pyautoattack.fab_pt`` under the official module name (see ``autoattack``)."""
from pyautoattack.fab_pt import *  # noqa: F401,F403
