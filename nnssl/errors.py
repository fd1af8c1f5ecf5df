"""The one exception type users see: a message that names the file and the fix, never a traceback."""
from __future__ import annotations


class NnsslError(Exception):
    """A user-facing error. CLIs print ``nnssl: error: <message>`` on one line and exit with code 2."""
