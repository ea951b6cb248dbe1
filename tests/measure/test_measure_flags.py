"""Pixel flags and fit flags set from the mask planes around each source."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diaflow.image import GaussianPsf, mask_bits
from diaflow.measure import MeasureConfig, detect, measure_dia_sources
from diaflow.measure.fakes import add_point, blank_exposure, flux_for_snr

NOISE = 5.0

# name: (x, y) of a source whose surroundings get one kind of mask.
SITES = {
    "clean": (100.0, 100.0),
    "saturated": (200.0, 100.0),
    "bad": (300.0, 100.0),
    "nodata": (400.0, 100.0),
    "edge": (5.0, 250.0),
    "cr": (100.0, 300.0),
    "interpolated": (200.0, 300.0),
    "suspect": (300.0, 300.0),
    "streak": (400.0, 300.0),
}


@pytest.fixture(scope="module")
def flagged() -> pd.DataFrame:
    psf = GaussianPsf(1.8, size=25)
    rng = np.random.default_rng(41)
    exp = blank_exposure((512, 512), psf=psf, noise_sigma=NOISE, edge_px=8)
    signal = np.zeros(exp.shape)
    for x, y in SITES.values():
        add_point(signal, psf, x + 0.3, y - 0.2, flux_for_snr(psf, x, y, 60.0, NOISE))
    exp.image = (signal + rng.standard_normal(exp.shape) * NOISE).astype(np.float32)
    m = exp.mask

    def put(plane: str, ys: slice | int, xs: slice | int, value: float | None = None) -> None:
        m[ys, xs] |= np.int32(mask_bits(plane))
        if value is not None:
            exp.image[ys, xs] = value

    put("SAT", slice(99, 102), slice(199, 202), 3e5)  # a saturated core, garbage under it
    put("BAD", slice(0, 200), 304, -1e4)  # a bad column 4 px from the source
    put("NO_DATA", slice(80, 120), slice(405, 512), 0.0)  # off a warped input, 5 px away
    put("CR", 100 + 200, slice(101, 103))  # cosmic-ray pixels next to the centre
    put("INTRP", 300, 200)  # interpolated centre pixel
    put("SUSPECT", slice(296, 305), 304)  # near-saturation pixels 4 px away
    put("STREAK", slice(290, 311), slice(399, 402))  # a streak through the source
    table = measure_dia_sources(exp, detect(exp), config=MeasureConfig(reliability=False))
    rows = {}
    for name, (x, y) in SITES.items():
        d = np.hypot(table["x"] - x, table["y"] - y)
        assert d.min() < 2.0, f"{name} source not found"
        rows[name] = table.iloc[int(np.argmin(d))]
    return pd.DataFrame(rows).T


PIXEL_FLAGS = ["bad", "cr", "edge", "interpolated", "nodata", "saturated",
                           "streak", "suspect"]  # fmt: skip


def test_measure_clean_source_has_no_flags(flagged: pd.DataFrame) -> None:
    row = flagged.loc["clean"]
    flags = [c for c in flagged.columns if c.startswith("pixelFlags") or c.endswith("_flag")]
    assert not any(bool(row[c]) for c in flags), [c for c in flags if row[c]]


@pytest.mark.parametrize(
    ("site", "footprint", "centre"),
    [
        ("saturated", True, True),
        ("bad", True, None),
        ("nodata", True, False),
        ("cr", True, True),
        ("interpolated", True, True),
        ("suspect", True, False),
        ("streak", True, True),
        ("edge", True, None),
    ],
)
def test_measure_pixel_flags_follow_the_mask(
    flagged: pd.DataFrame, site: str, footprint: bool, centre: bool | None
) -> None:
    row = flagged.loc[site]
    assert bool(row[f"pixelFlags_{site}"]) is footprint
    if centre is not None:
        assert bool(row[f"pixelFlags_{site}Center"]) is centre
    others = [f for f in PIXEL_FLAGS if f != site]
    assert not any(bool(row[f"pixelFlags_{f}"]) for f in others), site
    assert not row["pixelFlags_offimage"]


def test_measure_fit_flags_at_the_edge_and_on_masked_pixels(flagged: pd.DataFrame) -> None:
    edge = flagged.loc["edge"]
    assert edge["psfFlux_flag_edge"]
    assert edge["apFlux_flag_apertureTruncated"]
    assert edge["apFlux_flag"]
    assert np.isfinite(edge["psfFlux"])
    sat = flagged.loc["saturated"]
    # Saturated pixels are left out of the fit: the flux comes from the wings and stays sane.
    assert np.isfinite(sat["psfFlux"])
    assert sat["psfNdata"] < flagged.loc["clean"]["psfNdata"]
    assert abs(sat["psfFlux"] / flagged.loc["clean"]["psfFlux"] - 1) < 0.2
    assert sat["apFlux_flag"]
    assert not sat["apFlux_flag_apertureTruncated"]
