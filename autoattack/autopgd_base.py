"""Re-export of ``pyautoattack.autopgd_base`` under the official module name (see ``autoattack``)."""
from pyautoattack.autopgd_base import *  # noqa: F401,F403
