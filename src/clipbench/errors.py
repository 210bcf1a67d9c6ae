"""The errors that are the user's to fix, not clipbench's: bad data, a missing file, a config
that cannot run. The command line prints their message alone (it names the file or key and
says what to do) and exits non-zero; ``clipbench --debug`` or ``CLIPBENCH_DEBUG=1`` shows the
traceback too. Any other exception is a bug and keeps its traceback."""


class ClipbenchError(Exception):
    """Mixed into each domain error class (``class ImageNetError(ClipbenchError, RuntimeError)``)."""
