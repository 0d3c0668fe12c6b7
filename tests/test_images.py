"""User images: every odd kind opens as one RGB frame, every bad one gives a clear InputError."""

import pytest
from PIL import Image

from saferdemo.images import InputError, load_image


def test_modes_become_rgb(tmp_path):
    cases = {
        "rgba.png": Image.new("RGBA", (32, 16), (255, 0, 0, 0)),  # fully transparent red: white after compositing
        "cmyk.jpg": Image.new("CMYK", (32, 16), (0, 255, 0, 0)),
        "grey16.png": Image.new("I;16", (32, 16), 65535),
        "palette.gif": Image.new("P", (32, 16), 3),
    }
    for name, image in cases.items():
        image.save(tmp_path / name)
        loaded = load_image(tmp_path / name)
        assert loaded.mode == "RGB" and loaded.size == (32, 16), name
    assert load_image(tmp_path / "rgba.png").getpixel((0, 0)) == (255, 255, 255)
    assert load_image(tmp_path / "grey16.png").getpixel((0, 0)) == (255, 255, 255)


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    assert load_image(tmp_path / "anim.gif").getpixel((0, 0))[0] > 200


@pytest.mark.parametrize("content, message", [
    (b"this is not an image", "not a readable image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a readable image"),  # a PNG signature and then garbage
])
def test_bad_files_are_refused_clearly(tmp_path, content, message):
    (tmp_path / "bad.png").write_bytes(content)
    with pytest.raises(InputError, match=message):
        load_image(tmp_path / "bad.png")


def test_huge_images_are_refused_before_decoding(tmp_path):
    Image.new("1", (20000, 20000)).save(tmp_path / "huge.png")  # tiny file, 400 megapixels
    with pytest.raises(InputError, match="400 megapixels"):
        load_image(tmp_path / "huge.png")


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="cannot be read"):
        load_image(tmp_path / "nope.png")


def test_elongated_images_are_refused_clearly(tmp_path):
    Image.new("RGB", (10000, 10)).save(tmp_path / "strip.png")
    with pytest.raises(InputError, match="10000x10 pixels; images must be less elongated than 200:1"):
        load_image(tmp_path / "strip.png")


def test_fit_keeps_the_aspect_and_the_budget():
    from saferdemo.images import fit

    small = Image.new("RGB", (300, 200))
    assert fit(small, 2_000_000) is small
    big = fit(Image.new("RGB", (6000, 6000)), 2_000_000)
    assert big.width == big.height and big.width * big.height <= 2_000_000
