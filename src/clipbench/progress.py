"""Progress bars on a terminal, plain lines in a log file.

tqdm redraws its bar with carriage returns; in a log file (every Snakemake job writes to one)
that is a single line of hundreds of overwritten bars. Where the output is not a terminal, this
tqdm writes one plain line every ``PLAIN_EVERY`` seconds and one when the work ends.
"""
from __future__ import annotations

import sys

from tqdm import tqdm as _tqdm

PLAIN_EVERY = 30.0  # seconds between two lines in a log file


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class tqdm(_tqdm):  # noqa: N801 - a drop-in for tqdm.tqdm
    def __init__(self, *args, **kwargs):
        self._plain = not _is_terminal(kwargs.get("file") or sys.stderr)
        if self._plain:
            kwargs["mininterval"] = max(float(kwargs.get("mininterval", 0.1)), PLAIN_EVERY)
            kwargs["ascii"] = True
        self._written_n = None
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None):
        if not self._plain:
            return super().display(msg, pos)
        if msg == "" or self.n == self._written_n:  # tqdm clearing its bar, or nothing new
            return True
        self.fp.write((msg if msg is not None else self.__str__()).strip() + "\n")
        self.fp.flush()
        self._written_n = self.n
        return True

    def close(self, final: bool = True):
        if self._plain and not self.disable:
            if final:
                self.display()  # the final count, whether or not tqdm would leave its bar
            self.sp = None  # tqdm then skips its own closing writes (a bar, a "\r")
        super().close()

    def __del__(self):
        # Collected, not closed: after an exception, whose traceback must stay the log's last words.
        if getattr(self, "_plain", False) and not getattr(self, "disable", True):
            self.close(final=False)
        super().__del__()
