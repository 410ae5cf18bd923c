"""Pictures of products (matplotlib is an optional extra: ``pip install 'ztfluigi[plot]'``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import BinaryIO

import numpy as np

from ztfluigi import camera


def focal_plane_flat(flats: Mapping[int, np.ndarray], title: str, out: BinaryIO) -> None:
    """Draw 16 sky-oriented CCD flats at their focal-plane positions (East right, North up).

    The view of ztfimg: CCD 13 top right, q1 at each CCD's top right; one colour scale
    (1st–99th percentile of all CCDs) and a colour bar.
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
    ax.set_xlim(-3.9, 3.9)
    ax.set_ylim(-3.95, 3.95)
    ax.set_xlabel("East offset from the field centre (deg)")
    ax.set_ylabel("North offset (deg)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, label="relative response")
    fig.savefig(out, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
