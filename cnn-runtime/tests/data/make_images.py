"""Writes the JPEG fixtures read by io::tests::decodes_jpeg_written_by_pil.

Run from this folder with `pip install pillow` (tested with Pillow 12): python3 make_images.py
- step_grey.jpg: 8x8 grey, columns 0-3 black (0), columns 4-7 white (255), quality 100.
- halves_rgb.jpg: 16x8 RGB, left half (200, 30, 30), right half (30, 30, 200), quality 95,
  4:4:4 chroma (no subsampling), so each half decodes close to its colour.
"""
from PIL import Image

grey = Image.new("L", (8, 8), 0)
for y in range(8):
    for x in range(4, 8):
        grey.putpixel((x, y), 255)
grey.save("step_grey.jpg", quality=100)

rgb = Image.new("RGB", (16, 8), (200, 30, 30))
for y in range(8):
    for x in range(8, 16):
        rgb.putpixel((x, y), (30, 30, 200))
rgb.save("halves_rgb.jpg", quality=95, subsampling=0)
