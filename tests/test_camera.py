"""Camera geometry: orientations, CCD assembly, focal-plane layout."""

import numpy as np
import pytest

from ztfluigi import camera


def test_rcid_round_trip():
    for ccd in range(1, 17):
        for q in range(1, 5):
            assert camera.ccdid_qid(camera.rcid(ccd, q)) == (ccd, q)
    assert camera.rcid(13, 3) == 50  # the real IPAC example (RCID = 50)


@pytest.mark.parametrize("qid", [1, 2, 3, 4])
def test_read_orientation_is_an_involution_with_overscan_rule(qid):
    a = np.arange(12.0).reshape(3, 4)
    assert np.array_equal(camera.read_to_raw(camera.raw_to_read(a, qid), qid), a)
    # First-read overscan column is stored at index 0 for q1/q4 and 29 for q2/q3 (§1.2).
    over = np.zeros((3, 30))
    over[:, 0 if qid in (1, 4) else 29] = 1.0
    assert np.all(camera.raw_to_read(over, qid)[:, 0] == 1.0)


def test_assemble_split_round_trip_and_layout():
    quads = {q: np.full((4, 5), float(q)) for q in range(1, 5)}
    quads[1][0, 0] = 10.0  # stored (0,0) of q1 = NE corner = the CCD's top-right in sky view
    ccd = camera.assemble_ccd(quads)
    assert ccd.shape == (8, 10)
    assert ccd[-1, -1] == 10.0
    assert ccd[0, 0] == 3.0 and ccd[0, -1] == 4.0 and ccd[-1, 0] == 2.0
    back = camera.split_ccd(ccd)
    for q in range(1, 5):
        assert np.array_equal(back[q], quads[q])
        rows, cols = camera.quadrant_slice(q, ccd.shape)
        assert np.array_equal(camera.sky_to_raw(ccd[rows, cols]), quads[q])


def test_focal_plane_layout_matches_the_real_arrangement():
    lay = camera.focal_plane_layout()
    assert len(lay) == 64
    # CCD 13 is NE (East = +xi) of the field centre and its q3 is the SW quadrant of the CCD.
    c13 = [lay[(13, q)] for q in range(1, 5)]
    assert all(q.xi_center > 0 and q.eta_center > 0 for q in c13)
    q1, q2, q3, q4 = c13
    assert q1.xi_center > q2.xi_center and q1.eta_center > q4.eta_center  # q1 = NE
    assert q3.xi_center < q4.xi_center and q3.eta_center < q2.eta_center  # q3 = SW
    # The real q3 header has CRVAL 2.38° East, 2.40° North of the field centre (±0.05°).
    assert abs(q3.xi_center - 2.38) < 0.06 and abs(q3.eta_center - 2.40) < 0.06
    # Stored pixel (0,0) is the NE corner of every quadrant.
    xi, eta = q3.pixel_to_focal(0, 0)
    assert xi > q3.xi_center and eta > q3.eta_center


def test_windows_are_centred():
    shape = camera.quadrant_shape(8)
    assert shape == (385, 384)
    y0, x0 = camera.window_offset(shape)
    assert x0 + shape[1] / 2 + 0.5 == camera.IPAC_CRPIX[0]
    assert camera.quadrant_shape(1) == camera.QUADRANT_SHAPE
