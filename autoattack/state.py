"""Re-export of ``pyautoattack.state`` under the official module name (see ``autoattack``)."""
from pyautoattack.state import *  # noqa: F401,F403
from pyautoattack.state import EvaluationState  # noqa: F401,E402
