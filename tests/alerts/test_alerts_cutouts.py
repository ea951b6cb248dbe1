import io
from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from diaflow.alerts import CUTOUT_SIZE_PX, make_cutouts, visit_cutouts
from diaflow.alerts.synthetic import SyntheticVisit
from diaflow.errors import BadInputError
from diaflow.image import Exposure, MaskPlane


def _open(data: bytes) -> fits.HDUList:
    hdul = fits.open(io.BytesIO(data))
    hdul.verify("exception")
    return hdul


@pytest.fixture(scope="module")
def exposure(small_visit: SyntheticVisit) -> Exposure:
    e = small_visit.science
    rng = np.random.default_rng(5)
    e.mask[...] = rng.integers(0, 1 << 10, e.shape)
    return e


def test_default_size_is_rubins_30_pixels() -> None:
    assert CUTOUT_SIZE_PX == 30


def test_astropy_reads_back_the_exact_pixels(exposure: Exposure) -> None:
    x, y = np.array([100.2, 37.6]), np.array([150.7, 210.49])
    cut = make_cutouts(exposure, x, y, kind="difference")
    scale = exposure.counts_to_njy(1.0)
    for i in range(2):
        hdul = _open(cut[i])
        assert [h.name for h in hdul] == ["PRIMARY", "IMAGE", "MASK", "VARIANCE"]
        x0, y0 = int(np.floor(x[i] + 0.5)) - 15, int(np.floor(y[i] + 0.5)) - 15
        assert (hdul[0].header["X0"], hdul[0].header["Y0"]) == (x0, y0)
        assert (cut.x0[i], cut.y0[i]) == (x0, y0)
        win = (slice(y0, y0 + 30), slice(x0, x0 + 30))
        image = hdul["IMAGE"].data
        assert image.dtype == np.dtype(">f4")
        assert image.shape == (30, 30)
        np.testing.assert_array_equal(image, (exposure.image[win] * np.float32(scale)))
        np.testing.assert_array_equal(hdul["MASK"].data, exposure.mask[win])
        np.testing.assert_array_equal(
            hdul["VARIANCE"].data, exposure.variance[win] * np.float32(scale * scale)
        )
        assert hdul["IMAGE"].header["BUNIT"] == "nJy"
        header = hdul[0].header
        assert header["CUTTYPE"] == "difference"
        assert header["VISIT"] == exposure.info.visit
        assert header["DETECTOR"] == exposure.info.detector
        assert header["BAND"] == exposure.info.band
        assert header["MJD-MID"] == exposure.info.mjd_tai
        assert header["MP_NO_DATA"] == int(MaskPlane.NO_DATA)


def test_wcs_of_the_cutout_is_the_parents_shifted(exposure: Exposure) -> None:
    x, y = np.array([140.3, 12.0, 250.9]), np.array([77.7, 299.0, 3.2])
    cut = make_cutouts(exposure, x, y)
    for i in range(3):
        for ext in ("IMAGE", "MASK", "VARIANCE"):
            wcs = WCS(_open(cut[i])[ext].header)
            assert wcs.sip is not None  # distortion kept
            for px, py in [(15, 15), (0, 0), (29, 3)]:
                got = wcs.pixel_to_world_values(px, py)
                want = exposure.wcs.pixel_to_world_values(cut.x0[i] + px, cut.y0[i] + py)
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_edges_are_padded_with_nan_and_no_data(exposure: Exposure) -> None:
    ny, nx = exposure.shape
    cut = make_cutouts(exposure, [2.0, nx - 1.0, -40.0], [ny - 3.0, 5.0, 10.0])
    hdul = _open(cut[0])
    image, mask = hdul["IMAGE"].data, hdul["MASK"].data
    x0, y0 = cut.x0[0], cut.y0[0]
    assert (x0, y0) == (-13, ny - 18)
    off = np.zeros((30, 30), bool)
    off[:, :-x0] = True
    off[ny - y0 :, :] = True
    assert np.isnan(image[off]).all()
    assert (mask[off] == 1 << int(MaskPlane.NO_DATA)).all()
    assert np.isfinite(image[~off]).all()
    np.testing.assert_array_equal(mask[~off], exposure.mask[y0:, : x0 + 30].ravel())
    # Entirely off the detector: all NaN and NO_DATA, still a valid file.
    far = _open(cut[2])
    assert np.isnan(far["VARIANCE"].data).all()
    assert (far["MASK"].data == 1 << int(MaskPlane.NO_DATA)).all()


def test_other_sizes_and_files_are_whole_blocks(exposure: Exposure) -> None:
    cut = make_cutouts(exposure, [50.0], [60.0], size_px=11)
    assert cut.files.shape[1] % 2880 == 0
    assert _open(cut[0])["IMAGE"].data.shape == (11, 11)
    assert cut.x0[0] == 45


def test_visit_cutouts_share_positions_and_label_kinds(small_visit: SyntheticVisit) -> None:
    cuts = visit_cutouts(
        small_visit.science, small_visit.template, small_visit.difference, [100.0], [100.0]
    )
    for kind, c in cuts.items():
        assert _open(c[0])[0].header["CUTTYPE"] == kind
    template = _open(cuts["template"][0])["IMAGE"].data
    scale = small_visit.template.counts_to_njy(1.0)
    np.testing.assert_array_equal(
        template, small_visit.template.image[85:115, 85:115] * np.float32(scale)
    )


def test_no_wcs_still_writes_a_valid_file(exposure: Exposure) -> None:
    bare = replace(exposure, wcs=None)
    hdul = _open(make_cutouts(bare, [20.0], [20.0])[0])
    assert "CRPIX1" not in hdul["IMAGE"].header


def test_bad_inputs(small_visit: SyntheticVisit, exposure: Exposure) -> None:
    with pytest.raises(BadInputError, match="finite") as info:
        make_cutouts(exposure, [np.nan], [1.0])
    assert info.value.reason == "bad_position"
    with pytest.raises(BadInputError, match="one length"):
        make_cutouts(exposure, [1.0, 2.0], [1.0])
    small = replace(
        small_visit.template,
        image=small_visit.template.image[:10, :10],
        mask=small_visit.template.mask[:10, :10],
        variance=small_visit.template.variance[:10, :10],
    )
    with pytest.raises(BadInputError, match="warp the template") as info:
        visit_cutouts(small_visit.science, small, small_visit.difference, [1.0], [1.0])
    assert info.value.reason == "cutout_grid_mismatch"


def test_zero_sources_give_zero_files(exposure: Exposure) -> None:
    assert len(make_cutouts(exposure, [], [])) == 0


def test_reused_buffers_give_the_same_files(small_visit: SyntheticVisit) -> None:
    from diaflow.alerts import CutoutMaker

    maker = CutoutMaker(small_visit.science, small_visit.template, small_visit.difference)
    fresh = CutoutMaker(small_visit.science, small_visit.template, small_visit.difference)
    for xs, ys in [([10.0, 150.0, 270.0], [5.0, 150.0, 290.0]), ([33.3], [44.4])]:
        reused = maker.cut(xs, ys, reuse=True)
        new = fresh.cut(xs, ys)
        for kind in ("science", "template", "difference"):
            assert [reused[kind][i] for i in range(len(xs))] == [
                new[kind][i] for i in range(len(xs))
            ]
