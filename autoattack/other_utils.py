"""Re-export of ``pyautoattack.other_utils`` under the official module name (see ``autoattack``)."""
from pyautoattack.other_utils import *  # noqa: F401,F403
