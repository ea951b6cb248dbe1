import pytest

from diaflow.alerts import latest_version, load_schema, schema_for_id
from diaflow.errors import ConfigError


def test_latest_is_the_packages_latest_and_id_is_major_times_100_plus_minor() -> None:
    from lsst.alert.packet import get_latest_schema_version

    schema = load_schema()
    assert (schema.major, schema.minor) == latest_version() == tuple(get_latest_schema_version())
    assert schema.schema_id == schema.major * 100 + schema.minor
    assert schema.definition["name"] == f"lsst.v{schema.major}_{schema.minor}.alert"


def test_latest_shipped_here_is_11_1() -> None:
    assert load_schema().version == "11.1"
    assert load_schema().schema_id == 1101


def test_named_sub_schemas_are_resolved() -> None:
    schema = load_schema()
    for name in ("alert", "diaSource", "diaForcedSource", "diaObject", "ssSource", "mpc_orbits"):
        record = schema.record(name)
        assert record["type"] == "record"
        assert record["fields"]
    names = [f["name"] for f in schema.record("diaSource")["fields"]]
    assert names[:3] == ["diaSourceId", "visit", "detector"]


def test_an_older_version_by_major_minor() -> None:
    old = load_schema("11.0")
    assert old.schema_id == 1100
    assert old.definition["name"] == "lsst.v11_0.alert"
    assert schema_for_id(1100) is old
    assert load_schema("11.1") is load_schema()  # cached


@pytest.mark.parametrize(("version", "match"), [("11", "major.minor"), ("99.0", "not shipped")])
def test_bad_versions_are_refused(version: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_schema(version)


def test_unknown_record_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="diaSource"):
        load_schema().record("nope")
