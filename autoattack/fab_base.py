"""Re-export of ``pyautoattack.fab_base`` under the official module name (see ``autoattack``)."""
from pyautoattack.fab_base import *  # noqa: F401,F403
