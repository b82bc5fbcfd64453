"""Domain errors shared by the Python API, the CLI and the service: every one is a :class:`CivicgridError`.

The CLI prints any :class:`CivicgridError` as one ``error:`` line (exit status 2); the service maps each class to
an HTTP status in one table, ``DEFAULT_STATUS_CODES`` of ``civicgrid.api.errors``. Classes keep the built-in
base that callers may rely on (``except ValueError`` still catches a bad parameter or an unreadable file).
"""

from __future__ import annotations


class CivicgridError(Exception):
    """Base class of civicgrid's domain errors."""


class NotFoundError(CivicgridError, LookupError):
    """A code, id or name that does not exist (HTTP 404). The message names the closest known values."""


class InvalidParameterError(CivicgridError, ValueError):
    """A parameter that cannot be used as given (HTTP 422). The message says what would work."""


class OutOfRangeError(InvalidParameterError):
    """A value outside what its field can take: a time outside the plausible window, an id or offset beyond
    64 bits, a setting outside its range (HTTP 422). The message names the field and the allowed range."""


class TooLargeError(InvalidParameterError):
    """An upload or a field larger than allowed (HTTP 413); the message names the limit and its setting."""


class TooManyCellsError(InvalidParameterError):
    """A request that would return more cells than allowed (HTTP 422); the message names a resolution that fits,
    ``fits_res`` holds it (None when none does)."""

    def __init__(self, message: str, *, fits_res: int | None = None) -> None:
        super().__init__(message)
        self.fits_res = fits_res


class ConflictError(CivicgridError):
    """An operation refused in the current state, e.g. an illegal case transition (HTTP 409)."""


class AuthenticationError(CivicgridError):
    """No valid token (HTTP 401)."""


class PermissionDeniedError(CivicgridError, PermissionError):
    """A valid token whose role is too weak for the operation (HTTP 403)."""


class ReadError(CivicgridError, ValueError):
    """A file that cannot be read as a table (HTTP 422); the message says why (format, encoding, layer...)."""


class ImportFileError(CivicgridError, ValueError):
    """A file that cannot be imported at all, e.g. a required column is missing (HTTP 422); nothing was
    changed."""


class StoreError(CivicgridError, RuntimeError):
    """The database cannot be opened or written as asked (HTTP 503), e.g. no database at the path."""


class StoreVersionError(StoreError):
    """The database file was written by a newer civicgrid (HTTP 503): upgrade civicgrid to open it."""


class OfflineAssetError(CivicgridError, RuntimeError):
    """A page needs a script or stylesheet that is not vendored (it would come from a CDN), or the package that
    carries a vendored file is missing (HTTP 500: the installation, not the request, is at fault)."""
