"""Global one-to-one matching of DiaSources to DiaObjects by positional chi-square.

Candidates are all pairs within a radius (a KD-tree on unit vectors) whose chi-square under the
combined covariance (source + object mean + systematic floor) passes a gate. Among them one
assignment is chosen for the whole visit at once: the one that minimises the total cost, where a
matched pair costs its chi-square and an unmatched source costs the gate. So a source takes a
second-best object when that lets a neighbour keep the only object it can match, which a greedy
nearest-first choice gets wrong, and no object ever receives two sources of one visit.

The assignment is an exact minimum-cost bipartite matching (LAPJVsp, Jonker & Volgenant 1987,
through :func:`scipy.sparse.csgraph.min_weight_full_bipartite_matching`) on the candidate graph
augmented with a "no match" twin for every node, so that leaving nodes unmatched is allowed and
the sparse graph always has a perfect matching.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.sparse import csr_array
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

from ._sky import chi2, covariance_arcsec2, pairs_within, tangent_offsets
from .config import AssociationConfig

__all__ = ["Matches", "assign_one_to_one", "match_to_objects"]

_OFFSET = 1.0
"""Added to every edge weight: LAPJVsp needs non-zero weights, and every perfect matching of the
augmented graph has the same number of edges, so the optimum does not move."""


@dataclass(frozen=True)
class Matches:
    """One-to-one matches between the rows of two tables (positions in each, not ids)."""

    left: NDArray[np.int64]
    """Row positions in the first table (the DiaSources)."""
    right: NDArray[np.int64]
    """Row positions in the second table (the DiaObjects or predictions), one per ``left``."""
    chi2: NDArray[np.float64]
    """Chi-square of each pair under the combined covariance."""
    separation_arcsec: NDArray[np.float64]
    """Angular separation of each pair."""
    n_candidates: int
    """Number of candidate pairs the assignment chose from."""


def assign_one_to_one(
    left: ArrayLike, right: ArrayLike, cost: ArrayLike, *, unmatched_cost: float
) -> NDArray[np.bool_]:
    """Choose a one-to-one subset of candidate edges of least total cost.

    Each edge ``k`` joins ``left[k]`` to ``right[k]`` at ``cost[k]`` (finite, >= 0; pairs must be
    unique). A left node left unmatched costs ``unmatched_cost``; a right node left unmatched
    costs nothing. The result is exact over the whole graph, not per node.

    Returns
    -------
    numpy.ndarray of bool
        Which edges are chosen; no two chosen edges share a left or a right node.
    """
    li, ri = np.asarray(left, np.int64), np.asarray(right, np.int64)
    w = np.asarray(cost, np.float64)
    k = len(li)
    if k == 0:
        return np.zeros(0, bool)
    lu, lc = np.unique(li, return_inverse=True)
    ru, rc = np.unique(ri, return_inverse=True)
    n, m = len(lu), len(ru)
    an, am = np.arange(n), np.arange(m)
    # Rows: left nodes, then right twins. Columns: right nodes, then left twins.
    rows = np.concatenate([lc, an, n + rc, n + am])
    cols = np.concatenate([rc, m + an, m + lc, am])
    weights = np.concatenate([w, np.full(n, unmatched_cost), np.zeros(k), np.zeros(m)]) + _OFFSET
    graph = csr_array((weights, (rows, cols)), shape=(n + m, m + n))
    row_ind, col_ind = min_weight_full_bipartite_matching(graph)
    real = (row_ind < n) & (col_ind < m)
    chosen_l, chosen_r = row_ind[real], col_ind[real]
    # Back from (compact left, compact right) to edge numbers.
    key = lc.astype(np.int64) * m + rc
    order = np.argsort(key)
    pos = order[np.searchsorted(key[order], chosen_l.astype(np.int64) * m + chosen_r)]
    chosen = np.zeros(k, bool)
    chosen[pos] = True
    return chosen


def match_to_objects(
    sources: pd.DataFrame,
    objects: pd.DataFrame,
    *,
    config: AssociationConfig | None = None,
) -> Matches:
    """Match DiaSources one-to-one to DiaObjects by positional chi-square (see module notes).

    Parameters
    ----------
    sources
        DiaSources with ``ra, dec, raErr, decErr`` (degrees; ``ra_dec_Cov`` deg², optional).
        Rows with non-finite positions are never matched.
    objects
        Latest DiaObject versions with the same columns.
    config
        Radius, gate, systematic floor and the error assumed where one is missing.

    Returns
    -------
    Matches
        Row positions of the matched pairs, with their chi-square and separation.
    """
    cfg = config or AssociationConfig()
    ok_s = np.flatnonzero(_finite_position(sources))
    ok_o = np.flatnonzero(_finite_position(objects))
    s, o = sources.iloc[ok_s], objects.iloc[ok_o]
    i, j = pairs_within(s["ra"], s["dec"], o["ra"], o["dec"], cfg.radius_arcsec)
    i, j = ok_s[i], ok_o[j]
    dx, dy = tangent_offsets(
        sources["ra"].to_numpy()[i],
        sources["dec"].to_numpy()[i],
        objects["ra"].to_numpy()[j],
        objects["dec"].to_numpy()[j],
    )
    sxx, syy, sxy = _pair_covariance(sources, objects, i, j, cfg)
    c2 = chi2(dx, dy, sxx, syy, sxy)
    sep = np.hypot(dx, dy)
    keep = (c2 <= cfg.max_chi2) & (sep <= cfg.radius_arcsec)
    i, j, c2, sep = i[keep], j[keep], c2[keep], sep[keep]
    chosen = assign_one_to_one(i, j, c2, unmatched_cost=cfg.max_chi2)
    return Matches(i[chosen], j[chosen], c2[chosen], sep[chosen], int(keep.sum()))


def _finite_position(table: pd.DataFrame) -> NDArray[np.bool_]:
    ra, dec = table["ra"].to_numpy(np.float64), table["dec"].to_numpy(np.float64)
    return np.isfinite(ra) & np.isfinite(dec)


def _pair_covariance(
    a: pd.DataFrame,
    b: pd.DataFrame,
    i: NDArray[np.int64],
    j: NDArray[np.int64],
    cfg: AssociationConfig,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Sum of the covariances of rows ``a[i]`` and ``b[j]`` plus the systematic floor, arcsec²."""
    ca = table_covariance(a, cfg.missing_error_arcsec)
    cb = table_covariance(b, cfg.missing_error_arcsec)
    floor = cfg.systematic_error_arcsec**2
    return (
        ca[0][i] + cb[0][j] + floor,
        ca[1][i] + cb[1][j] + floor,
        ca[2][i] + cb[2][j],
    )


def table_covariance(
    table: pd.DataFrame, missing_error_arcsec: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Per-row positional covariance (xx, yy, xy) in arcsec² of an APDB table."""
    cov = table["ra_dec_Cov"].to_numpy(np.float64) if "ra_dec_Cov" in table else None
    return covariance_arcsec2(
        table["raErr"].to_numpy(np.float64),
        table["decErr"].to_numpy(np.float64),
        cov,
        missing_error_arcsec=missing_error_arcsec,
    )
