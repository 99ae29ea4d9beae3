"""The one mark of an expected user mistake: ``UserError``. The command-line wrapper (``hf_gptlite.cli``) turns
it into one ``error: ...`` line and exit status 2; every other exception is a bug and keeps its traceback.

A user error is something the person running the command can fix without touching the code: a missing,
empty or malformed input file or folder, a bad flag or YAML value, a name that is neither a folder nor a Hub
id, a server (judge, Hub) that cannot be reached, an output folder that is in the way. Each class is also the
built-in exception it refines (``InputValueError`` is a ``ValueError``, ``MissingInputError`` a
``FileNotFoundError`` ...), so library callers that catch the built-in types keep working.

Library code raises these where it checks the user's input; :func:`as_user_error` marks the ``ValueError``s
of a validation call into code that does not know about them (a config dataclass, a checkpoint check)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """Marker base class: an expected mistake of the user, reported in one line without a traceback."""


class InputValueError(UserError, ValueError):
    """A bad flag / config value, or a file whose content is malformed (not UTF-8, bad JSON, bad rows, empty)."""


class MissingInputError(UserError, FileNotFoundError):
    """An input file or folder that does not exist (or lacks what it must hold)."""


class NotAFileError(UserError, IsADirectoryError):
    """A folder where an input file is expected."""


class OutputInTheWayError(UserError, FileExistsError):
    """An output path that exists and cannot be written into (a file where a folder goes, a non-empty folder)."""


class OutputNotWritableError(UserError, PermissionError):
    """An output folder that cannot be created or written (no permission, a read-only file system)."""


class ServerUnreachableError(UserError, ConnectionError):
    """A server the command needs (the LLM judge, the Hub at ``HF_ENDPOINT``) cannot be reached."""


class MissingCredentialsError(UserError, PermissionError):
    """A credential the command needs (the Hub token) is not set."""


def check_output_dir(path, what: str = "output folder"):
    """An output folder may be absent (it is created later, after every input was checked) or a folder; a file
    in its place, or a place this process cannot write (the folder, or the nearest folder above it that exists),
    is refused now, before any work. Writing is tried, not guessed from permission bits (which root ignores): a
    nameless temporary file, gone when closed. Returns the path."""
    import tempfile
    from pathlib import Path

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputInTheWayError(f"{what} {str(path)!r} is a file; pass a folder (absent or existing)")
    existing = path  # the folder, or the nearest one above it that exists: where the first write goes
    if not path.is_dir():
        existing = next(parent for parent in path.absolute().parents if parent.exists())
        if not existing.is_dir():
            raise OutputInTheWayError(f"{what} {str(path)!r} cannot be created: {str(existing)!r} is a file")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        where = "" if existing == path else f" in {str(existing)!r}"
        raise OutputNotWritableError(f"{what} {str(path)!r} cannot be written{where}: {err.strerror or err}; pass "
                                     "an --output_dir this user can write") from err
    return path


@contextmanager
def as_user_error(*types: type[BaseException], context: str = "") -> Iterator[None]:
    """Re-raise ``types`` (default ``ValueError``) raised inside the block as :class:`InputValueError` with the
    same message (prefixed by ``context``), chained to the original. Use it around a validation call whose
    ``ValueError`` can only mean a bad input (a config dataclass's ``__post_init__``, a checkpoint check)."""
    caught = types or (ValueError,)
    try:
        yield
    except UserError:
        raise
    except caught as err:
        message = str(err) if not context else f"{context}: {err}"
        if isinstance(err, FileNotFoundError):
            raise MissingInputError(message) from err
        raise InputValueError(message) from err


__all__ = [
    "UserError", "InputValueError", "MissingInputError", "NotAFileError", "OutputInTheWayError", "OutputNotWritableError",
    "ServerUnreachableError",
    "MissingCredentialsError", "as_user_error", "check_output_dir",
]
