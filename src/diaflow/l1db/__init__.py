"""The Level 1 database: APDB tables, SQLite and PostgreSQL backends, generations, alert archive.

Open one with :func:`open_l1db` (and the archive with :func:`open_archive`) from an
:class:`L1DbConfig`; every backend implements :class:`L1Database`. See ``docs/l1db.md``.
"""

from .api import (
    AlertArchive,
    ArchivedAlert,
    L1Database,
    Provenance,
    Region,
    VisitProducts,
    VisitRecord,
    VisitState,
)
from .archive import PostgresAlertArchive, SqliteAlertArchive
from .config import (
    Generation,
    L1DbConfig,
    create_generation,
    current_generation,
    generations,
    open_archive,
    open_l1db,
)
from .ids import IdParts, compact_visit, expand_visit, make_ids, pack_id, unpack_id
from .postgres import PostgresL1Database
from .schema import TABLE_NAMES, TableSpec, coerce, empty, table_spec
from .sqlite import SqliteL1Database

__all__ = [
    "TABLE_NAMES",
    "AlertArchive",
    "ArchivedAlert",
    "Generation",
    "IdParts",
    "L1Database",
    "L1DbConfig",
    "PostgresAlertArchive",
    "PostgresL1Database",
    "Provenance",
    "Region",
    "SqliteAlertArchive",
    "SqliteL1Database",
    "TableSpec",
    "VisitProducts",
    "VisitRecord",
    "VisitState",
    "coerce",
    "compact_visit",
    "create_generation",
    "current_generation",
    "empty",
    "expand_visit",
    "generations",
    "make_ids",
    "open_archive",
    "open_l1db",
    "pack_id",
    "table_spec",
    "unpack_id",
]
