"""What real photo folders hold, decoded as torchvision/timm users expect; the indexing check of a file."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oomguard.data.decode import UnreadableImage, check_image, decode


def png16(path: Path, pixels: np.ndarray) -> Path:
    """A 16-bit PNG written by hand (Pillow writes 16-bit greyscale only): HxWxC uint16, C = 1, 2, 3 or 4."""
    height, width, channels = pixels.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


def truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def noisy(size: tuple[int, int] = (40, 30), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def test_greyscale_palette_and_alpha_become_rgb_as_torchvision_converts_them(tmp_path: Path) -> None:
    grey = tmp_path / "grey.png"
    Image.new("L", (6, 4), 77).save(grey)
    assert decode(grey, 32).tolist() == np.full((4, 6, 3), 77).tolist()  # repeated into three channels

    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (6, 4), (10, 20, 30, 0)).save(rgba)  # transparent: the colour is kept, alpha dropped
    assert decode(rgba, 32)[0, 0].tolist() == [10, 20, 30]

    palette = Image.new("P", (6, 4), 2)
    palette.putpalette([0, 0, 0, 255, 255, 255, 200, 100, 50] + [0] * 759)
    palette.info["transparency"] = bytes([0, 255, 128] + [255] * 253)  # per-entry transparency (tRNS)
    palette.save(tmp_path / "palette.png")
    with warnings.catch_warnings(record=True) as caught:  # Pillow warns when such images go straight to RGB
        warnings.simplefilter("always")
        pixels = decode(tmp_path / "palette.png", 32)
    assert [str(w.message) for w in caught] == []
    assert pixels[0, 0].tolist() == [200, 100, 50]

    grey_alpha = tmp_path / "la.png"
    Image.new("LA", (6, 4), (90, 10)).save(grey_alpha)
    assert decode(grey_alpha, 32)[0, 0].tolist() == [90, 90, 90]


def test_16_bit_pngs_are_scaled_to_8_bits_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    grey = png16(tmp_path / "grey16.png", values[..., None])
    with Image.open(grey) as image:
        assert image.mode == "I;16"  # what Pillow's own convert("RGB") would clip to 0 or 255
    assert decode(grey, 32)[..., 0].tolist() == [[0, 1, 128, 255]]
    assert decode(grey, 32)[..., 2].tolist() == [[0, 1, 128, 255]]

    colour = np.stack([values, values[:, ::-1], np.full_like(values, 512)], axis=-1)
    rgb = png16(tmp_path / "rgb16.png", colour)
    assert decode(rgb, 32).tolist() == [[[0, 255, 2], [1, 128, 2], [128, 1, 2], [255, 0, 2]]]
    assert check_image(grey) is None and check_image(rgb) is None


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = (250, 0, 0)  # left half red, right half blue
    pixels[:, 20:] = (0, 0, 250)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # the camera was turned: rotate 90 degrees clockwise to view
    image.save(tmp_path / "turned.jpg", exif=exif, quality=95)
    upright = decode(tmp_path / "turned.jpg", 64)
    assert upright.shape == (40, 20, 3)  # portrait, as the photo was taken
    top, bottom = upright[2, 10], upright[-3, 10]
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # the red half on top once turned
    image.save(tmp_path / "plain.jpg", quality=95)
    assert decode(tmp_path / "plain.jpg", 64).shape == (20, 40, 3)


@pytest.mark.parametrize(("name", "words"), [("photo.jpg", "image file is truncated"),
                                            ("photo.png", "image file is truncated"),
                                            ("photo.bmp", "image file is truncated"),
                                            ("photo.webp", "could not create decoder object")])
def test_the_check_finds_truncated_files_of_every_format(tmp_path: Path, name: str, words: str) -> None:
    path = tmp_path / name
    Image.fromarray(noisy((200, 150))).save(path)
    assert check_image(path) is None
    truncated(path)
    reason = check_image(path)
    assert reason is not None and reason.startswith(words), reason
    with pytest.raises(UnreadableImage) as err:
        decode(path, 32)
    assert err.value.path == str(path) and err.value.reason
    assert str(err.value) == f"image file {str(path)!r} cannot be read ({err.value.reason}); fix or remove it"


def test_the_check_names_files_that_are_not_images_or_missing(tmp_path: Path) -> None:
    fake = tmp_path / "notes.jpg"
    fake.write_text("shopping list")
    assert check_image(fake) == "not an image Pillow can read"
    assert check_image(tmp_path / "gone.png") == "not found"
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert check_image(empty) == "not an image Pillow can read"
