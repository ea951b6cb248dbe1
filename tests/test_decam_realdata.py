"""Real pixels: DECam i-band exposures (../shared/realdata/decam), template from one group of
five, the other group subtracted, the transient at the centre recovered; residual statistics
side by side with the peer's (SFFT) difference image that ships with the data.

The exposures are 256^2 cut-outs already on one grid, with ~6 usable stars: calibration is
relative (an internal reference catalog from exposure OBS18a) and the kernel is constant.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import sep
from astropy.io import fits
from astropy.stats import mad_std

from diaflow.calib import CalibConfig, PsfConfig, calibrate, internal_refcat
from diaflow.coadd import TemplateConfig, build_template
from diaflow.diffim import KernelConfig, StampConfig, SubtractConfig, subtract
from diaflow.errors import SubtractionError
from diaflow.image import Exposure, read_single_image
from diaflow.measure import detect_and_measure, forced_photometry

DECAM = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "decam"
pytestmark = pytest.mark.skipif(
    not DECAM.exists(), reason="shared/realdata/decam is not beside the checkout"
)
SUBTRACT = SubtractConfig(
    stamps=StampConfig(min_snr=10.0, min_stamps=3),
    kernel=KernelConfig(spatial_order=0, background_order=0),
)
CENTRE = (128.1, 127.6)
"""Where the transient is (pixels), as the peer's difference and ours both show it."""


def _ids(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64)


@pytest.fixture(scope="module")
def decam():  # type: ignore[no-untyped-def]
    paths = sorted((DECAM / "input_data").glob("DEC-OBS*.mini.fits"))
    raw = {p.name.split(".")[0][-3:]: read_single_image(p) for p in paths}
    ref = raw["18a"]
    refcat = internal_refcat(ref, zero_point=30.0)
    config = CalibConfig(psf=PsfConfig(order=0, min_stars=3))
    cal = {k: calibrate(e, refcat, config=config).exposure for k, e in raw.items()}
    groups = {}
    for g in ("18", "04"):
        groups[g] = build_template(
            [cal[k] for k in cal if k.startswith(g)],
            target_wcs=ref.wcs,
            target_shape=ref.shape,
            config=TemplateConfig(min_visits=3),
            band="i",
        )
    return ref, refcat, cal, groups


def _residuals(diff: Exposure, stars_xy: np.ndarray, fwhm: float) -> dict[str, float]:
    """Blank-sky noise, the transient's forced PSF flux and S/N, star residuals and other 5 sigma
    detections, each with the variance plane scaled to the image's own blank-sky noise."""
    yy, xx = np.mgrid[0 : diff.shape[0], 0 : diff.shape[1]]
    far = (diff.mask == 0) & (np.hypot(xx - CENTRE[0], yy - CENTRE[1]) > 15)
    for x, y in stars_xy:
        far &= np.hypot(xx - x, yy - y) > 15
    z = diff.image / np.sqrt(diff.variance)
    ratio = float(mad_std(z[far]))
    own = dataclasses.replace(diff, variance=(diff.variance * ratio**2).astype(np.float32))
    z = own.image / np.sqrt(own.variance)
    ra, dec = diff.wcs.all_pix2world([CENTRE[0]], [CENTRE[1]], 0)  # type: ignore[union-attr]
    forced = forced_photometry(own, ra, dec, ids=[1], make_ids=_ids)
    star_rms = [np.sqrt(np.mean(z[np.hypot(xx - x, yy - y) < 2 * fwhm] ** 2)) for x, y in stars_xy]
    found, _ = detect_and_measure(own, make_ids=_ids)
    others = np.hypot(found["x"] - CENTRE[0], found["y"] - CENTRE[1]) > 3
    return {
        "noise_over_variance": ratio,
        "blank_std_njy": float(mad_std(diff.image[far])),
        "transient_flux": float(forced["psfFlux"].iloc[0]),
        "transient_snr": float(forced["psfFlux"].iloc[0] / forced["psfFluxErr"].iloc[0]),
        "star_rms_median": float(np.median(star_rms)),
        "star_rms_max": float(np.max(star_rms)),
        "other_detections": int(others.sum()),
    }


def test_group_difference_recovers_the_transient_and_matches_the_peer(decam) -> None:  # type: ignore[no-untyped-def]
    ref, refcat, _, groups = decam
    science, template = groups["04"].exposure, groups["18"].exposure
    sub = subtract(science, template, config=SUBTRACT)
    diff = sub.difference
    found, _ = detect_and_measure(diff, science=science, template=template, make_ids=_ids)
    d = np.hypot(found["x"] - CENTRE[0], found["y"] - CENTRE[1])
    transient = found[d < 1.0]
    assert len(transient) == 1
    assert float(transient["snr"].iloc[0]) > 20
    assert float(transient["reliability"].iloc[0]) > 0.5
    # Bright stars, for the residual statistics.
    bright = refcat.sort_values("i_flux", ascending=False).head(6)
    sx, sy = ref.wcs.all_world2pix(bright["ra"], bright["dec"], 0)
    stars = np.c_[sx, sy]
    fwhm = float(science.psf.fwhm_px(128, 128))
    # The peer's images are in the science exposure's ADU: put them on our nJy scale with the
    # bright stars of its science stack.
    peer_stack = fits.getdata(DECAM / "4check" / "Stack-DEC-OBS04.fits").astype(np.float64)

    def aperture(img: np.ndarray) -> np.ndarray:
        data = np.ascontiguousarray(np.nan_to_num(img), dtype=np.float64)
        return sep.sum_circle(data, sx, sy, 12.0)[0]

    scale = float(np.median(aperture(science.image) / aperture(peer_stack)))
    table = {"diaflow": _residuals(diff, stars, fwhm)}
    for name, file in (
        ("sfft", "FinalDifference.DeCorr.fits"),
        ("sfft_raw", "FinalDifference.fits"),
    ):
        peer = fits.getdata(DECAM / "4check" / file).astype(np.float64) * scale
        table[name] = _residuals(
            dataclasses.replace(diff, image=peer.astype(np.float32)), stars, fwhm
        )
    for name, row in table.items():
        print(name, {k: round(v, 3) for k, v in row.items()})
    ours, peer = table["diaflow"], table["sfft"]
    assert 0.85 <= ours["noise_over_variance"] <= 1.1
    assert ours["transient_flux"] == pytest.approx(peer["transient_flux"], rel=0.1)
    assert ours["star_rms_max"] <= peer["star_rms_max"]
    assert ours["other_detections"] <= peer["other_detections"]


def test_single_exposures_recover_the_transient_or_fail_clearly(decam) -> None:  # type: ignore[no-untyped-def]
    _, _, cal, groups = decam
    template = groups["18"].exposure
    recovered, refused = 0, []
    for k in ("04a", "04b", "04c", "04d", "04e"):
        try:
            sub = subtract(cal[k], template, config=SUBTRACT)
        except SubtractionError as err:
            # 256^2 pixels hold ~6 stars; after clipping a fit may have too few.
            refused.append(err.reason)
            continue
        found, _ = detect_and_measure(sub.difference, make_ids=_ids)
        d = np.hypot(found["x"] - CENTRE[0], found["y"] - CENTRE[1])
        assert (d < 1.5).any(), k
        assert float(found["snr"][d < 1.5].max()) > 10, k
        assert 0.85 <= sub.quality.noise_ratio <= 1.1, k
        recovered += 1
    assert recovered >= 4
    assert set(refused) <= {"too_few_stamps"}
