"""The Rubin alert schema, loaded from the ``lsst-alert-packet`` package.

diaflow writes the latest schema the installed package ships (``latest.txt``; 11.1 at the time
of writing) and can pick an older one by ``"major.minor"``. The package's own loader
(:class:`lsst.alert.packet.Schema`) resolves the named sub-schemas (``diaSource``, ``diaObject``,
...) that the top-level ``alert`` record refers to, so the definition here is the one Rubin's
brokers read. The schema id carried in the Confluent wire header is ``major * 100 + minor``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro

from ..errors import ConfigError

__all__ = ["AlertSchema", "latest_version", "load_schema", "schema_for_id"]


@dataclass(frozen=True, eq=False)
class AlertSchema:
    """One version of the Rubin alert schema, ready for fastavro and for diaflow's encoder."""

    major: int
    """Major version, e.g. 11."""
    minor: int
    """Minor version, e.g. 1."""
    definition: dict[str, Any] = field(repr=False)
    """The ``alert`` record with its sub-schemas resolved (``lsst.alert.packet.Schema``)."""
    parsed: Any = field(repr=False)
    """``fastavro.parse_schema(definition)``, for fastavro's reader, writer and validator."""
    records: dict[str, dict[str, Any]] = field(repr=False)
    """Every named record by short name (``"alert"``, ``"diaSource"``, ``"diaObject"``, ...)."""

    @property
    def schema_id(self) -> int:
        """The id of the Confluent wire header: ``major * 100 + minor`` (11.1 -> 1101)."""
        return self.major * 100 + self.minor

    @property
    def version(self) -> str:
        """``"major.minor"``."""
        return f"{self.major}.{self.minor}"

    def record(self, name: str) -> dict[str, Any]:
        """The definition of one named record (short name, e.g. ``"diaSource"``)."""
        try:
            return self.records[name]
        except KeyError:
            raise ConfigError(
                f"alert schema {self.version} has no record {name!r}; it has {sorted(self.records)}"
            ) from None


def latest_version() -> tuple[int, int]:
    """(major, minor) of the latest schema the installed ``lsst-alert-packet`` ships."""
    from lsst.alert.packet import get_latest_schema_version

    major, minor = get_latest_schema_version()
    return int(major), int(minor)


def _parse_version(version: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", version)
    if match is None:
        raise ConfigError(
            f"alert schema version must be 'major.minor' (e.g. '11.1'), got {version!r}"
        )
    return int(match.group(1)), int(match.group(2))


def _collect_records(node: Any, out: dict[str, dict[str, Any]]) -> None:
    """Find every record definition (the first, expanded occurrence of each name)."""
    if isinstance(node, dict):
        if node.get("type") == "record" and "fields" in node:
            out.setdefault(str(node["name"]).rsplit(".", 1)[-1], node)
            for f in node["fields"]:
                _collect_records(f["type"], out)
        else:
            for key in ("type", "items", "values"):
                if key in node:
                    _collect_records(node[key], out)
    elif isinstance(node, list):
        for item in node:
            _collect_records(item, out)


@functools.cache
def _load(major: int, minor: int) -> AlertSchema:
    from lsst.alert.packet import Schema, get_schema_path

    path = Path(get_schema_path(major, minor)) / f"lsst.v{major}_{minor}.alert.avsc"
    if not path.exists():
        raise ConfigError(
            f"alert schema {major}.{minor} is not shipped by the installed lsst-alert-packet "
            f"({path} missing); pick another version or upgrade the package"
        )
    definition = Schema.from_file(str(path)).definition
    records: dict[str, dict[str, Any]] = {}
    _collect_records(definition, records)
    return AlertSchema(
        major=major,
        minor=minor,
        definition=definition,
        parsed=fastavro.parse_schema(definition),
        records=records,
    )


def load_schema(version: str | None = None) -> AlertSchema:
    """Load an alert schema: the latest by default, or ``"major.minor"`` (e.g. ``"11.0"``).

    Loaded schemas are cached, so calling this per visit costs nothing.

    Raises
    ------
    ConfigError
        If the version is malformed or not shipped by the installed package.
    """
    major, minor = latest_version() if version is None else _parse_version(version)
    return _load(major, minor)


def schema_for_id(schema_id: int) -> AlertSchema:
    """The schema whose wire-format id is ``schema_id`` (``major * 100 + minor``)."""
    if schema_id <= 0:
        raise ConfigError(f"alert schema id must be major*100+minor > 0, got {schema_id}")
    return _load(schema_id // 100, schema_id % 100)
