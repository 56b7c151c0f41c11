"""Error types shared across raypipe, one per meaning."""


class LayoutError(ValueError):
    """An input file whose rows match no known format: the job stops and says what it found."""


class RowError(ValueError):
    """One row that cannot be normalised: it goes to rejects/ with this message."""


class ConfigMismatch(RuntimeError):
    """An output folder holds a run made with other settings (pass --overwrite, or choose another folder)."""


class UnusableInput(ValueError):
    """An input file found unusable before any work (unreadable, or its fields fit no format): the job stops with
    one line naming the file and the fix, unless told to reject such a file as a whole."""
