"""Images for the captioner: read with Pillow, converted to RGB, centre-cropped, resized, normalised;
or taken from an `.npz` / `.npy` file (pixels or precomputed CNN features).

Dimensions: N images, S side of the square image, C channels (3), D feature size.

Pillow is optional (`pip install 'rnnkit[images]'`) and imported only when a picture is read. Every mode
Pillow opens is accepted: grayscale (L, I;16, 1), palette (P) and CMYK become RGB; an alpha channel (RGBA,
LA, P with transparency) is composited onto white, so a transparent background does not turn black.

Bad input: a file that is missing, unreadable, not an image or truncated raises `UserError` naming the
file; `load_images(..., skip_bad=True)` skips it instead and lists it in `bad` as (name, reason), so the
caller reports the count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnkit.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# ImageNet channel statistics: fixed constants, so normalisation needs no state in the checkpoint
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def require_pillow():
    """Import PIL.Image, or raise a UserError saying how to install it."""
    try:
        from PIL import Image
    except ImportError:
        raise UserError("reading images needs Pillow: pip install 'rnnkit[images]' (or pip install "
                        "pillow)") from None
    return Image


def to_rgb(img):
    """Any Pillow image -> RGB; transparency composited onto white."""
    Image = require_pillow()
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if img.mode == "I;16" or img.mode == "I":
        # 16-bit grayscale: scale to 8 bits before converting (convert("L") would clip at 255)
        a = np.asarray(img, dtype=np.float64)
        hi = a.max() if a.size and a.max() > 0 else 1.0
        return Image.fromarray((a * (255.0 / hi)).astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


def load_image(path, size: int | None = 64) -> np.ndarray:
    """Read one picture -> uint8 (S, S, 3): RGB, centre-cropped to a square, Lanczos-resized to `size`.

    size None keeps the picture's own size and aspect. A bad file raises UserError naming it.
    """
    Image = require_pillow()
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so a truncated file fails here and not later
            img = to_rgb(img)
    except FileNotFoundError:
        raise UserError(f"{path}: no such image file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected an image file") from None
    except Image.UnidentifiedImageError:
        raise UserError(f"{path}: not an image Pillow can read (expected JPEG or PNG)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise UserError(f"{path}: corrupt or truncated image ({e})") from None
    if size is not None:
        w, h = img.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s)).resize((size, size), Image.LANCZOS)
    return np.asarray(img, dtype=np.uint8).copy()


def normalise(images: np.ndarray, dtype=np.float32) -> np.ndarray:
    """uint8 (N, S, S, 3) (or one (S, S, 3)) -> float (N, 3, S, S): scaled to [0, 1], then per-channel
    (x - mean) / std with ImageNet's statistics; channels first for the convolutions."""
    x = np.asarray(images)
    single = x.ndim == 3
    if single:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images have shape {x.shape}, expected (N, S, S, 3)")
    out = (x.astype(dtype) / 255.0 - MEAN.astype(dtype)) / STD.astype(dtype)
    out = np.ascontiguousarray(out.transpose(0, 3, 1, 2))
    return out[0] if single else out


@dataclass
class ImageSet:
    """What an image source gave for a list of names.

    kind: "pixels" (uint8 (N, S, S, 3)) or "features" (float (N, D) or (N, C, h, w) feature maps).
    index: name -> row of `data`. bad: (name, reason) of each image that could not be used.
    """

    kind: str
    data: np.ndarray
    index: dict
    source: str
    bad: list = field(default_factory=list)

    def rows(self, names):
        return np.array([self.index[n] for n in names], dtype=np.int64)

    def bad_summary(self) -> str | None:
        if not self.bad:
            return None
        n = len(self.bad)
        name, reason = self.bad[0]
        return f"{self.source}: {n} image{'s' if n != 1 else ''} unusable (first: {name}: {reason})"


def load_images(source, names, size: int = 64, skip_bad: bool = False) -> ImageSet:
    """Load the images `names` (file names, as in the captions file) from `source`:

    - a directory of JPEG/PNG files: read with Pillow, resized to `size`;
    - an `.npz` with `images` uint8 (N, S, S, 3) and `filenames` (N,): pixels (resized if S != size);
    - an `.npz` with `features` float (N, D) or (N, C, h, w) and `filenames`: precomputed features;
    - an `.npy` float array (N, D) or (N, C, h, w): precomputed features whose rows follow `names` sorted.
    A name the source lacks or cannot read is an error naming it, or, with skip_bad, listed in `bad`.
    """
    source = Path(source)
    names = list(dict.fromkeys(names))  # unique, in order
    if source.is_dir():
        return _load_dir(source, names, size, skip_bad)
    if not source.exists():
        raise UserError(f"--images {source}: no such file or directory")
    if source.suffix == ".npz":
        return _load_npz(source, names, size, skip_bad)
    if source.suffix == ".npy":
        return _load_npy(source, names)
    raise UserError(f"--images {source}: expected a directory of JPEG/PNG images, an .npz or an .npy file")


def _bad(bad, skip_bad, name, reason, source):
    if not skip_bad:
        raise UserError(f"{reason} (use --skip-bad-rows to skip such images)")
    bad.append((name, reason))


def _load_dir(source, names, size, skip_bad):
    arrays, index, bad = [], {}, []
    for name in names:
        path = source / name
        if not path.is_file():
            _bad(bad, skip_bad, name, f"{path}: image named in the captions file is missing", source)
            continue
        try:
            img = load_image(path, size)
        except UserError as e:
            _bad(bad, skip_bad, name, str(e), source)
            continue
        index[name] = len(arrays)
        arrays.append(img)
    data = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)
    return ImageSet("pixels", data, index, str(source), bad)


def _open_npz(source):
    try:
        return np.load(source, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"--images {source}: not a readable .npz/.npy file ({e})") from None


def _load_npz(source, names, size, skip_bad):
    z = _open_npz(source)
    keys = set(z.files)
    if "filenames" not in keys or not ({"images", "features"} & keys):
        raise UserError(f"--images {source}: expected arrays 'filenames' and 'images' (uint8 pixels) or "
                        f"'features' (floats); found {sorted(keys)}")
    try:
        files = [str(f) for f in z["filenames"]]
        data = z["images"] if "images" in keys else z["features"]
    except ValueError as e:  # object arrays need pickle, which is refused
        raise UserError(f"--images {source}: cannot load without pickle ({e})") from None
    if len(files) != len(data):
        raise UserError(f"--images {source}: {len(files)} filenames but {len(data)} rows")
    kind = "pixels" if "images" in keys else "features"
    if kind == "pixels" and (data.ndim != 4 or data.shape[-1] != 3 or data.dtype != np.uint8):
        raise UserError(f"--images {source}: 'images' has shape {data.shape} dtype {data.dtype}, "
                        f"expected uint8 (N, S, S, 3)")
    if kind == "features" and (data.ndim not in (2, 4) or data.dtype.kind != "f"):
        raise UserError(f"--images {source}: 'features' has shape {data.shape} dtype {data.dtype}, "
                        f"expected floats (N, D) or (N, C, h, w)")
    pos = {f: i for i, f in enumerate(files)}
    keep, index, bad = [], {}, []
    for name in names:
        if name not in pos:
            _bad(bad, skip_bad, name, f"{source}: no image {name!r} (named in the captions file)", source)
            continue
        index[name] = len(keep)
        keep.append(pos[name])
    out = data[np.array(keep, dtype=np.int64)] if keep else data[:0]
    if kind == "pixels" and out.shape[1] != size and len(out):
        Image = require_pillow()
        out = np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.LANCZOS)) for a in out])
    return ImageSet(kind, np.ascontiguousarray(out), index, str(source), bad)


def _load_npy(source, names):
    data = _open_npz(source)
    if not isinstance(data, np.ndarray) or data.ndim not in (2, 4) or data.dtype.kind != "f":
        raise UserError(f"--images {source}: expected a float array (N, D) or (N, C, h, w) of features")
    order = sorted(names)
    if len(data) != len(order):
        raise UserError(f"--images {source}: {len(data)} feature rows, but the captions name "
                        f"{len(order)} images (rows must follow the sorted image names)")
    return ImageSet("features", data, {n: i for i, n in enumerate(order)}, str(source), [])
