"""Image reading: JPEG/PNG, grayscale / RGBA / palette converted, resized and normalised; corrupt and
missing files reported by name (or skipped and counted)."""

import numpy as np
import pytest

from rnnkit.data.images import MEAN, STD, load_image, load_images, normalise
from rnnkit.errors import UserError

Image = pytest.importorskip("PIL.Image")


@pytest.fixture
def pictures(tmp_path):
    """A small folder: RGB JPEG, grayscale PNG, RGBA PNG (transparent), palette PNG, 16-bit PNG, plus a
    corrupt JPEG, a truncated PNG and a text file named .jpg."""
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "red.jpg", quality=95)
    Image.fromarray(np.full((20, 20), 128, np.uint8), "L").save(tmp_path / "gray.png")
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 2] = 255
    rgba[:8, :, 3] = 255  # top half opaque blue, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(np.full((10, 10), 65535, np.uint16)).save(tmp_path / "deep.png")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 20)
    good = (tmp_path / "gray.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "text.jpg").write_text("not an image")
    return tmp_path


def test_modes_converted_to_rgb(pictures):
    red = load_image(pictures / "red.jpg", size=8)
    assert red.shape == (8, 8, 3) and red.dtype == np.uint8
    assert abs(int(red[..., 0].mean()) - 200) < 5 and red[..., 1].max() < 10
    gray = load_image(pictures / "gray.png", size=8)
    assert gray.shape == (8, 8, 3) and np.all(gray == 128)
    alpha = load_image(pictures / "alpha.png", size=None)
    assert alpha.shape == (16, 16, 3)
    assert np.all(alpha[:8] == [0, 0, 255])  # opaque part kept
    assert np.all(alpha[8:] == 255)  # transparent part composited onto white, not black
    assert load_image(pictures / "palette.png", size=8).shape == (8, 8, 3)
    assert load_image(pictures / "deep.png", size=4).max() == 255  # 16-bit scaled, not clipped to 0


def test_centre_crop_and_resize(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, 10:30] = 255  # the centre square is white, the sides black
    Image.fromarray(a).save(tmp_path / "wide.png")
    out = load_image(tmp_path / "wide.png", size=10)
    assert out.shape == (10, 10, 3) and out.min() > 240


@pytest.mark.parametrize("name,what", [("corrupt.jpg", "corrupt.jpg"), ("truncated.png", "truncated.png"),
                                       ("text.jpg", "not an image"), ("missing.jpg", "no such image")])
def test_bad_files_name_the_file(pictures, name, what):
    with pytest.raises(UserError, match=what):
        load_image(pictures / name)


def test_load_images_skips_and_counts(pictures):
    names = ["red.jpg", "corrupt.jpg", "gray.png", "missing.jpg", "truncated.png"]
    with pytest.raises(UserError, match="corrupt.jpg"):
        load_images(pictures, names, size=8)
    s = load_images(pictures, names, size=8, skip_bad=True)
    assert s.kind == "pixels" and s.data.shape == (2, 8, 8, 3)
    assert sorted(s.index) == ["gray.png", "red.jpg"]
    assert [n for n, _ in s.bad] == ["corrupt.jpg", "missing.jpg", "truncated.png"]
    assert "3 images unusable" in s.bad_summary()


def test_npz_pixels_and_features(tmp_path):
    np.savez(tmp_path / "px.npz", images=np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3),
             filenames=np.array(["a.jpg", "b.jpg"]))
    s = load_images(tmp_path / "px.npz", ["b.jpg", "a.jpg"], size=8)
    assert s.kind == "pixels" and s.index == {"b.jpg": 0, "a.jpg": 1}
    assert s.data[0, 0, 0, 0] == 192  # b.jpg's first byte
    assert load_images(tmp_path / "px.npz", ["a.jpg"], size=4).data.shape == (1, 4, 4, 3)
    with pytest.raises(UserError, match="no image 'c.jpg'"):
        load_images(tmp_path / "px.npz", ["a.jpg", "c.jpg"])
    np.savez(tmp_path / "ft.npz", features=np.ones((2, 5), np.float32), filenames=np.array(["a", "b"]))
    f = load_images(tmp_path / "ft.npz", ["a", "b"])
    assert f.kind == "features" and f.data.shape == (2, 5)
    np.save(tmp_path / "ft.npy", np.arange(10, dtype=np.float32).reshape(2, 5))
    f = load_images(tmp_path / "ft.npy", ["z", "y"])  # rows follow the sorted names
    assert f.data[f.index["y"], 0] == 0 and f.data[f.index["z"], 0] == 5
    with pytest.raises(UserError, match="2 feature rows"):
        load_images(tmp_path / "ft.npy", ["a", "b", "c"])
    np.savez(tmp_path / "bad.npz", other=np.ones(3))
    with pytest.raises(UserError, match="expected arrays 'filenames'"):
        load_images(tmp_path / "bad.npz", ["a"])


def test_normalise():
    x = np.full((2, 4, 4, 3), 255, np.uint8)
    out = normalise(x)
    assert out.shape == (2, 3, 4, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, 0, 0], (1 - MEAN) / STD, rtol=1e-6)


def test_shared_npz_matches_jpegs(data_dir):
    """The 64x64 npz of flickr8k_mini was made from the JPEGs by centre crop + Lanczos resize, as
    `load_image` does: the two agree to within JPEG-decoder rounding."""
    root = data_dir / "flickr8k_mini"
    if not (root / "images_64x64.npz").exists():
        pytest.skip("flickr8k_mini not available")
    z = np.load(root / "images_64x64.npz", allow_pickle=False)
    name = str(z["filenames"][0])
    ours = load_image(root / "images" / name, 64).astype(int)
    assert np.abs(ours - z["images"][0].astype(int)).mean() < 3
