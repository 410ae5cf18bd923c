"""Pictures of products (matplotlib is an optional extra: ``pip install 'ztfluigi[plot]'``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import BinaryIO

import numpy as np

from ztfluigi import camera


def focal_plane_flat(
    flats: Mapping[int, np.ndarray],
    title: str,
    out: BinaryIO,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Draw 16 sky-oriented CCD flats at their focal-plane positions (East right, North up).

    The view of ztfimg: CCD 13 top right, q1 at each CCD's top right; CCD and quadrant labels,
    one colour scale (1st–99th percentile of all CCDs) and a colour bar. ``metadata`` becomes
    the PNG's text chunks; no date is written (matplotlib's ``Software`` only if not given), so
    the same flats give the same bytes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.concatenate([f[np.isfinite(f)].ravel()[::7] for f in flats.values()])
    vmin, vmax = np.percentile(values, [1, 99])
    fig, ax = plt.subplots(figsize=(8.5, 8))
    extents = camera.ccd_extents()
    image = None
    for ccdid, flat in sorted(flats.items()):
        xi0, xi1, eta0, eta1 = extents[ccdid]
        image = ax.imshow(flat, origin="lower", extent=(xi0, xi1, eta0, eta1), cmap="cividis",
                          vmin=vmin, vmax=vmax, interpolation="nearest")  # fmt: skip
        ax.text(xi0 + 0.08, eta1 - 0.25, f"{ccdid:02d}", color="white", fontsize=9, weight="bold")
        for qid in range(1, 5):  # each quadrant's id in its corner nearest the CCD centre
            q0, q1, e0, e1 = _quadrant_corners(ccdid, qid)
            inner_x = q1 - 0.04 if q0 + q1 < xi0 + xi1 else q0 + 0.04
            inner_y = e1 - 0.04 if e0 + e1 < eta0 + eta1 else e0 + 0.04
            ax.text(inner_x, inner_y, f"q{qid}", color="0.1", fontsize=6, alpha=0.85,
                    ha="right" if q0 + q1 < xi0 + xi1 else "left",
                    va="top" if e0 + e1 < eta0 + eta1 else "bottom")  # fmt: skip
    ax.set_xlim(-3.9, 3.9)
    ax.set_ylim(-3.95, 3.95)
    ax.set_xlabel("East offset from the field centre (deg)")
    ax.set_ylabel("North offset (deg)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, label="relative response")
    fig.savefig(out, format="png", dpi=110, bbox_inches="tight", metadata=dict(metadata or {}))
    plt.close(fig)


def _quadrant_corners(ccdid: int, qid: int) -> tuple[float, float, float, float]:
    """(xi_min, xi_max, eta_min, eta_max) in degrees of a full-size quadrant."""
    lay = camera.focal_plane_layout()[(ccdid, qid)]
    xi, eta = lay.pixel_to_focal(
        np.array([-0.5, camera.QUADRANT_SHAPE[1] - 0.5]),
        np.array([-0.5, camera.QUADRANT_SHAPE[0] - 0.5]),
    )
    return float(xi.min()), float(xi.max()), float(eta.min()), float(eta.max())


def _focal_plane_axes(title: str):  # noqa: ANN202 - matplotlib objects
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 8))
    for ccdid, (xi0, xi1, eta0, eta1) in camera.ccd_extents().items():
        ax.add_patch(matplotlib.patches.Rectangle((xi0, eta0), xi1 - xi0, eta1 - eta0,
                                                  fill=False, lw=0.6, ec="0.5"))  # fmt: skip
        ax.text(xi0 + 0.08, eta1 - 0.25, f"{ccdid:02d}", color="0.3", fontsize=9, weight="bold")
    # East right, North up (the ztfimg view of plots.focal_plane_flat): xi (East) grows right.
    ax.set_xlim(-3.9, 3.9)
    ax.set_ylim(-3.95, 3.95)
    ax.set_aspect("equal")
    ax.set_xlabel("East offset from the field centre (deg)")
    ax.set_ylabel("North offset (deg)")
    ax.set_title(title, fontsize=10)
    return fig, ax, plt


def focal_plane_cells(
    ccdid: np.ndarray,
    qid: np.ndarray,
    ix: np.ndarray,
    iy: np.ndarray,
    grid: tuple[int, int],
    values_mmag: np.ndarray,
    title: str,
    out: BinaryIO,
    label: str = "δZP (mmag)",
) -> None:
    """Draw per-cell values (mmag) of full-size quadrant grids at their focal-plane positions.

    East right, North up, as :func:`focal_plane_flat`; a symmetric diverging colour scale
    (1st–99th percentile of |value|); cells without data stay blank.
    """
    fig, ax, plt = _focal_plane_axes(title)
    nx, ny = grid
    vmax = float(np.percentile(np.abs(values_mmag), 99)) if values_mmag.size else 1.0
    vmax = max(vmax, 1e-3)
    cmap = plt.get_cmap("RdBu_r")
    norm = plt.Normalize(-vmax, vmax)
    for c, q, i, j, v in zip(ccdid, qid, ix, iy, values_mmag, strict=True):
        lay = camera.focal_plane_layout()[(int(c), int(q))]
        w, h = camera.QUADRANT_SHAPE[1] / nx, camera.QUADRANT_SHAPE[0] / ny
        xi, eta = lay.pixel_to_focal(np.array([i * w - 0.5, (i + 1) * w - 0.5]),
                                     np.array([j * h - 0.5, (j + 1) * h - 0.5]))  # fmt: skip
        ax.add_patch(plt.Rectangle((xi.min(), eta.min()), np.ptp(xi), np.ptp(eta),
                                   color=cmap(norm(v)), lw=0))  # fmt: skip
    mappable = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03, label=label)
    fig.savefig(out, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def focal_plane_quadrants(
    ccdid: np.ndarray, qid: np.ndarray, values: np.ndarray, errors: np.ndarray, title: str,
    out: BinaryIO, label: str = "relative gain",
) -> None:  # fmt: skip
    """Draw one value per quadrant (e.g. the fitted relative gain) over the focal plane, each
    quadrant annotated with its value and error (per cent from 1)."""
    fig, ax, plt = _focal_plane_axes(title)
    dev = 100 * (np.asarray(values) - 1.0)
    vmax = max(float(np.max(np.abs(dev))) if dev.size else 1.0, 1e-3)
    cmap = plt.get_cmap("RdBu_r")
    norm = plt.Normalize(-vmax, vmax)
    for c, q, d, e in zip(ccdid, qid, dev, 100 * np.asarray(errors), strict=True):
        xi0, xi1, eta0, eta1 = _quadrant_corners(int(c), int(q))
        ax.add_patch(plt.Rectangle((xi0, eta0), xi1 - xi0, eta1 - eta0, color=cmap(norm(d)),
                                   lw=0))  # fmt: skip
        ax.text((xi0 + xi1) / 2, (eta0 + eta1) / 2, f"{d:+.2f}\n±{e:.2f}", ha="center",
                va="center", fontsize=6)  # fmt: skip
    mappable = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03, label=f"{label} − 1 (%)")
    fig.savefig(out, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def starflat_pictures(
    cells: Mapping[str, list], quadrants: Mapping[str, list], grid: tuple[int, int], tag: str,
    stats: str,
) -> dict[str, bytes]:
    """The starflat's PNGs: δZP residual maps (focal-plane and per-quadrant normalisation, mmag)
    and the fitted gain per quadrant (%), from its ``cells`` and ``quadrants`` tables."""
    import io

    from ztfluigi.starflat import gain_errors

    where = (np.array(cells["ccdid"]), np.array(cells["qid"]), np.array(cells["ix"]),
             np.array(cells["iy"]), grid)  # fmt: skip
    pictures = {"residual_fp": ("dzp", "focal-plane normalisation (the pipeline's flats)"),
                "residual_quadnorm": ("dzp_quadnorm", "flats normalised per quadrant")}  # fmt: skip
    out = {}
    for name, (column, what) in pictures.items():
        buf = io.BytesIO()
        focal_plane_cells(*where, 1000 * np.array(cells[column], dtype=float),
                          f"{tag}: δZP, {what}\n{stats}", buf)  # fmt: skip
        out[name] = buf.getvalue()
    gain = np.array(quadrants["gain_rel_quadnorm"], dtype=float)
    buf = io.BytesIO()
    focal_plane_quadrants(
        np.array(quadrants["ccdid"]), np.array(quadrants["qid"]), gain,
        gain_errors(gain, np.array(quadrants["jump_err"])),
        f"{tag}: fitted gain per quadrant (flats normalised per quadrant)", buf,
    )  # fmt: skip
    out["gain"] = buf.getvalue()
    return out
