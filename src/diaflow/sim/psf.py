"""The true PSF of a visit: a Moffat profile whose width and ellipticity vary over the focal plane.

The FWHM grows quadratically with distance from the boresight (``psf_fwhm_radial_variation`` at the
edge of the field of view), and the ellipticity follows an astigmatism-like pattern plus a constant
(tracking/wind shake) drawn per visit. Coordinates are focal-plane pixels relative to the boresight.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import galsim
import numpy as np

from .config import RenderConfig, SurveyConfig

__all__ = ["VisitPsf", "true_pixel_psf", "true_visit_psf"]


@dataclass(frozen=True)
class VisitPsf:
    """PSF model of one visit."""

    fwhm_arcsec: float
    """FWHM at the boresight."""
    beta: float
    radial_variation: float
    field_radius_px: float
    g1_const: float
    g2_const: float
    g_astig: float

    @classmethod
    def draw(
        cls, fwhm_arcsec: float, field_radius_px: float, cfg: RenderConfig, rng: np.random.Generator
    ) -> VisitPsf:
        """A PSF for one visit with random ellipticity terms."""
        return cls(
            fwhm_arcsec=fwhm_arcsec,
            beta=cfg.psf_beta,
            radial_variation=cfg.psf_fwhm_radial_variation,
            field_radius_px=field_radius_px,
            g1_const=float(rng.normal(0, cfg.psf_ellipticity_rms / 2)),
            g2_const=float(rng.normal(0, cfg.psf_ellipticity_rms / 2)),
            g_astig=float(rng.normal(0, cfg.psf_ellipticity_rms / 2)),
        )

    @classmethod
    def from_row(cls, row: Mapping[str, object], cfg: SurveyConfig) -> VisitPsf:
        """The PSF a visit was rendered with, from its row of ``visits.parquet``."""
        from .render import field_radius_px

        return cls(
            fwhm_arcsec=float(row["seeing_fwhm_arcsec"]),  # type: ignore[arg-type]
            beta=cfg.render.psf_beta,
            radial_variation=cfg.render.psf_fwhm_radial_variation,
            field_radius_px=field_radius_px(cfg.camera),
            g1_const=float(row["psf_g1"]),  # type: ignore[arg-type]
            g2_const=float(row["psf_g2"]),  # type: ignore[arg-type]
            g_astig=float(row["psf_g_astig"]),  # type: ignore[arg-type]
        )

    def params(self, fx: np.ndarray, fy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """FWHM (arcsec) and reduced shears (g1, g2) at focal-plane pixel offsets (fx, fy)."""
        u, v = np.asarray(fx) / self.field_radius_px, np.asarray(fy) / self.field_radius_px
        rho2 = u**2 + v**2
        fwhm = self.fwhm_arcsec * (1 + self.radial_variation * rho2)
        g1 = self.g1_const + self.g_astig * (u**2 - v**2)
        g2 = self.g2_const + self.g_astig * 2 * u * v
        return fwhm, g1, g2

    def galsim_psf(self, fwhm: float, g1: float, g2: float) -> galsim.GSObject:
        """The GalSim profile for local parameters."""
        return galsim.Moffat(beta=self.beta, fwhm=fwhm).shear(g1=g1, g2=g2)


def true_pixel_psf(
    psf: VisitPsf,
    boresight_pixel: tuple[float, float],
    shape: tuple[int, int],
    pixel_scale_arcsec: float,
    *,
    size: int = 31,
    order: int = 2,
):  # type: ignore[no-untyped-def]
    """The visit's true PSF on one detector as a :class:`~diaflow.image.PixelPsf` (for tests).

    Stamps are drawn exactly as the renderer draws stars (pixel-sampled Moffat), at a grid of
    detector positions, and fitted with polynomials of the position.
    """
    from ..image import PixelPsf

    def stamp(x: float, y: float) -> np.ndarray:
        fwhm, g1, g2 = psf.params(
            np.array([x - boresight_pixel[0]]), np.array([y - boresight_pixel[1]])
        )
        obj = psf.galsim_psf(float(fwhm[0]) / pixel_scale_arcsec, float(g1[0]), float(g2[0]))
        return obj.drawImage(nx=size, ny=size, scale=1.0, method="no_pixel").array.astype(
            np.float64
        )

    return PixelPsf.from_function(stamp, shape, order=order)


def true_visit_psf(row: Mapping[str, object], cfg: SurveyConfig):  # type: ignore[no-untyped-def]
    """The true PSF of a visit-detector row of ``visits.parquet`` as a PixelPsf (for tests and
    benchmarks that inject sources the way the simulator drew its stars)."""
    from .render import mosaic

    geom = mosaic(cfg.camera, np.random.default_rng(0))[int(row["detector"])]  # type: ignore[call-overload]
    return true_pixel_psf(
        VisitPsf.from_row(row, cfg), geom.boresight_pixel, geom.shape, cfg.camera.pixel_scale_arcsec
    )
