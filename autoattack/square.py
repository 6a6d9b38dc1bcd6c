"""Re-export of ``pyautoattack.square`` under the official module name (see ``autoattack``)."""
from pyautoattack.square import *  # noqa: F401,F403
