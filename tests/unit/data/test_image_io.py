import numpy as np
import pytest

from autoseg.data.geometry import Geometry
from autoseg.data.image_io import read_file, read_image, read_label, write_image, write_label
from autoseg.data.synthetic import oblique_direction
from autoseg.errors import ImageIOError


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_roundtrip_oblique_3d(tmp_path, ending):
    geo = Geometry((3.0, 0.7, 0.8), (10.0, -5.0, 2.25), oblique_direction(0.4))
    arr = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    path = write_image(tmp_path / f"img{ending}", arr, geo)
    back, g = read_file(path)
    assert back.shape == (1, 5, 6, 7)
    np.testing.assert_array_equal(back[0], arr)
    assert g.matches(geo) == []
    np.testing.assert_allclose(g.spacing, geo.spacing, rtol=1e-6)
    np.testing.assert_allclose(g.direction, geo.direction, atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == [f"img{ending}"]  # no temporary left behind


def test_label_roundtrip_keeps_values(tmp_path):
    geo = Geometry((1.0, 2.0, 3.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    lab = np.random.default_rng(1).integers(0, 4, (4, 5, 6))
    write_label(tmp_path / "l.nii.gz", lab, geo)
    back, g = read_label(tmp_path / "l.nii.gz")
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, lab)
    assert g.spacing == (1.0, 2.0, 3.0)


def test_png_gray_and_rgb(tmp_path):
    geo = Geometry.identity((1.0, 1.0), dim=2)
    gray = np.arange(48, dtype=np.uint16).reshape(1, 6, 8) * 1000
    write_image(tmp_path / "g.png", gray, geo)
    back, g = read_file(tmp_path / "g.png")
    assert back.shape == (1, 1, 6, 8) and back.dtype == np.uint16 and g.dim == 2 and g.spacing == (999.0, 1.0, 1.0)
    np.testing.assert_array_equal(back[0], gray)
    rgb = np.random.default_rng(2).integers(0, 255, (3, 1, 6, 8)).astype(np.uint8)
    write_image(tmp_path / "c.png", rgb, geo)
    back, _ = read_file(tmp_path / "c.png")
    assert back.shape == (3, 1, 6, 8)
    np.testing.assert_array_equal(back, rgb)


def test_read_image_stacks_channels(tmp_path):
    geo = Geometry.identity()
    for c in range(2):
        write_image(tmp_path / f"x_{c:04d}.nii.gz", np.full((3, 4, 5), c, np.int16), geo)
    img, _ = read_image([tmp_path / "x_0000.nii.gz", tmp_path / "x_0001.nii.gz"])
    assert img.shape == (2, 3, 4, 5) and img.dtype == np.float32 and img[1].min() == 1


def test_errors_name_file(tmp_path):
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(ImageIOError, match=r"empty.nii.gz: file is empty"):
        read_file(tmp_path / "empty.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(b"\x1f\x8b garbage" * 10)
    with pytest.raises(ImageIOError, match=r"junk.nii.gz: cannot be read"):
        read_file(tmp_path / "junk.nii.gz")
    with pytest.raises(ImageIOError, match=r"lossy"):
        read_file(tmp_path / "x.jpg")
    with pytest.raises(ImageIOError, match=r"missing.nii.gz: file not found"):
        read_file(tmp_path / "missing.nii.gz")
