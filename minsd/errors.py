"""What minsd raises when it refuses an input: one base class, MinsdError.

Every deliberate check (checks.py, the loaders, the command line's own) raises one of
the four below, which are also the built-in error a Python reader expects (a wrong type
is a TypeError, a missing file a FileNotFoundError). The command line prints a
MinsdError as one line and exit status 2; anything else is a bug and keeps its
traceback. Torch-free, so that `python -m minsd --help` need not load torch.
"""


class MinsdError(Exception):
    """minsd refuses an input, and the message says what was wrong and what is
    allowed."""


class InvalidValue(MinsdError, ValueError):
    """A value, a file's content or a config that minsd does not take."""


class InvalidType(MinsdError, TypeError):
    """An argument of a type minsd does not take."""


class MissingFile(MinsdError, FileNotFoundError):
    """A file or folder the input names is not there."""


class NotFinite(MinsdError, FloatingPointError):
    """A result with NaN or inf in it (fp16 overflow, usually), reported, not
    returned."""


def one_line(err: BaseException) -> str:
    """A library's error message on one line, to quote in a refusal (the command line
    prints each refusal as one line)."""
    return " ".join(str(err).split())
