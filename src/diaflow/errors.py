"""Every error diaflow raises on purpose.

The tree::

    DiaflowError(Exception)
    ├── ConfigError(DiaflowError, ValueError)       a configuration that cannot work;
    │                                               nothing was written
    └── BadInputError(DiaflowError, ValueError)     input that cannot be processed: quarantine it
        ├── CorruptFileError(BadInputError)         a file that cannot be read or is truncated
        ├── CalibrationError(BadInputError)         a visit that cannot be calibrated
        ├── TemplateError(BadInputError)            no usable template (too few inputs, no overlap)
        ├── SubtractionError(BadInputError)         PSF matching or subtraction failed
        └── DuplicateVisitError(BadInputError)      a visit that is already stored
    DatabaseError(DiaflowError)                     the Level 1 database refused or went away
    ├── DatabaseUnavailableError(DatabaseError)     could not connect or lost the connection:
    │                                               retry later, nothing was written
    └── ArchiveConflictError(DatabaseError)         an alert id already archived with other bytes
    SinkUnavailableError(DiaflowError, ConnectionError)  an alert sink (Kafka) is unreachable:
                                                    send the same packets again later

Each error subclasses the matching built-in, so ``except ValueError`` still catches it. Messages
name the object, the rule, the value received and a hint.
"""

from __future__ import annotations

__all__ = [
    "ArchiveConflictError",
    "BadInputError",
    "CalibrationError",
    "ConfigError",
    "CorruptFileError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "DiaflowError",
    "DuplicateVisitError",
    "SinkUnavailableError",
    "SubtractionError",
    "TemplateError",
]


class DiaflowError(Exception):
    """Base of every error diaflow raises on purpose."""


class ConfigError(DiaflowError, ValueError):
    """A configuration that cannot work. Raised before anything is written."""


class BadInputError(DiaflowError, ValueError):
    """Input that cannot be processed: quarantine it, keep the night going.

    Parameters
    ----------
    reason
        Stable machine-readable code, e.g. ``"variance_nonpositive"``.
    message
        Human-readable explanation with the value received and a hint.
    **details
        Numbers for the quarantine record.
    """

    def __init__(self, reason: str, message: str, **details: object) -> None:
        super().__init__(message)
        self.reason = reason
        self.details = details


class CorruptFileError(BadInputError):
    """A file that cannot be read: truncated, not FITS, or missing a required extension."""


class CalibrationError(BadInputError):
    """A visit that cannot be calibrated: too few stars, no overlap with the reference catalog,
    all pixels bad. ``reason`` says which; the visit is quarantined."""


class TemplateError(BadInputError):
    """No usable template: too few input visits, no overlap, or all inputs rejected."""


class SubtractionError(BadInputError):
    """PSF matching or image subtraction failed (too few kernel candidates, singular fit)."""


class DuplicateVisitError(BadInputError):
    """A visit-detector already stored in this generation (or given twice in one night)."""


class DatabaseError(DiaflowError):
    """The Level 1 database or the alert archive refused an operation or went away."""


class DatabaseUnavailableError(DatabaseError):
    """The database could not be reached or the connection dropped; nothing was written, so the
    operation can be retried."""


class ArchiveConflictError(DatabaseError):
    """An alert whose id is archived already with different bytes: the archive is never
    overwritten."""


class SinkUnavailableError(DiaflowError, ConnectionError):
    """A sink could not be reached or did not confirm delivery; nothing is lost: send the same
    packets again later (every sink is idempotent)."""
