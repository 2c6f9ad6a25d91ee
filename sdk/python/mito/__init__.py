"""mito: the Python SDK of the mito lab task runner.

A client of the coordinator's HTTP API (docs/api.md), with the standard
library only::

    import mito
    c = mito.Client()              # $MITO_COORDINATOR, $MITO_TOKEN or `mito client login`
    t = c.submit(shell="echo hi")
    print(c.wait(t["id"])["state"], c.logs(t["id"]))

Failures raise :class:`MitoError` subclasses named after the API's error
codes (:class:`NotFound`, :class:`QuotaExceeded`, ...).
"""

from .client import (
    DEFAULT_COORDINATOR,
    FINAL_STATES,
    Client,
    clean_path,
    config_dir,
    load_token,
    parse_input,
)
from .errors import (
    ChecksumMismatch,
    Conflict,
    Forbidden,
    Invalid,
    MitoError,
    NotFound,
    QuotaExceeded,
    TooLarge,
    Unauthorized,
    Unavailable,
)

__version__ = "0.1.0"

__all__ = [
    "Client",
    "DEFAULT_COORDINATOR",
    "FINAL_STATES",
    "clean_path",
    "config_dir",
    "load_token",
    "parse_input",
    "MitoError",
    "Invalid",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "TooLarge",
    "QuotaExceeded",
    "Unavailable",
    "ChecksumMismatch",
]
