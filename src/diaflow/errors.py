"""Every error diaflow raises on purpose.

The tree::

    DiaflowError(Exception)
    ├── ConfigError(DiaflowError, ValueError)       a configuration that cannot work;
    │                                               nothing was written
    └── BadInputError(DiaflowError, ValueError)     input that cannot be processed: quarantine it
        ├── CorruptFileError(BadInputError)         a file that cannot be read or is truncated
        ├── CalibrationError(BadInputError)         a visit that cannot be calibrated
        ├── TemplateError(BadInputError)            no usable template (too few inputs, no overlap)
        └── SubtractionError(BadInputError)         PSF matching or subtraction failed

Each error subclasses the matching built-in, so ``except ValueError`` still catches it. Messages
name the object, the rule, the value received and a hint.
"""

from __future__ import annotations

__all__ = [
    "BadInputError",
    "CalibrationError",
    "ConfigError",
    "CorruptFileError",
    "DiaflowError",
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
