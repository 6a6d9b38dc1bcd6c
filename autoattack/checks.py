"""Re-export of ``pyautoattack.checks`` under the official module name (see ``autoattack``)."""
from pyautoattack.checks import *  # noqa: F401,F403
