#!/usr/bin/env python3
"""Reference fixtures for the image input stage (contract "The pipeline", steps 1-2).

Pinned: pillow==13.0.0, numpy==2.3.5 (Pillow 13.0.0's wheel bundles libjpeg-turbo 3.2.0,
libwebp 1.6.0, libtiff 4.7.2).

    python3 -m venv /work/venv-img && /work/venv-img/bin/pip install pillow==13.0.0 numpy==2.3.5
    /work/venv-img/bin/python tests/reference/make_image_fixtures.py            # -> tests/fixtures/image
    /work/venv-img/bin/python tests/reference/make_image_fixtures.py --jpeg-matrix /tmp/jm
        # a larger JPEG matrix (260 files, not committed) used once to choose the
        # JPEG decoder (libjpeg-turbo via mozjpeg-sys: 260/260 byte-exact; zune-jpeg 3/260)

Everything is deterministic: numpy patterns + noise from seeded generators.

Layout of the output directory:
  index.json            what every file is (see the keys below)
  decode/NAME.EXT       an input file; decode/NAME.rgb = Pillow's Image.open(p).convert("RGB") bytes
  resize/NAME.png       a resize case: 8-bit RGB source; resize/NAME.out.png = Pillow's
                        img.resize((w, h), Image.Resampling.BICUBIC) (PNG is lossless)
index.json:
  decode: [{name, file, expected, width, height, mode (Pillow's mode before convert), note}]
  resize: [{name, src, out, src_w, src_h, w, h}]
  target_size: [[w, h, S, new_w, new_h], ...] (scale = S / max(w, h); new = ceil(scale*w), ceil(scale*h))
  pipeline: [{name, src, out, max_size, w, h}] target_size followed by resize (the contract's step 2)
  sample_jpg: {path, width, height, sha256} of Pillow's RGB bytes of the shared sample.jpg, if present
"""

import argparse
import hashlib
import io
import json
import math
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image, features

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.normpath(os.path.join(HERE, "..", "fixtures", "image"))
SAMPLE_JPG = "/work/shared/data/keras_rmac/sample.jpg"


def pattern(w, h, seed, noise=20.0):
    """uint8 HxWx3: gradients, a sinusoid, a saturated checker on the left half, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack(
        [
            255.0 * x / max(w - 1, 1),
            255.0 * y / max(h - 1, 1),
            127.5 + 127.5 * np.sin((x + 2.0 * y) / 5.0),
        ],
        axis=-1,
    )
    checker = ((x // 7 + y // 5) % 2 == 0) & (x < w / 2)
    img[checker] = [250.0, 5.0, 128.0]
    img[(x >= w * 0.75) & (y < h / 3)] = [0.0, 0.0, 0.0]
    img[(x >= w * 0.75) & (y >= 2 * h / 3)] = [255.0, 255.0, 255.0]
    img += rng.normal(0.0, noise, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def smooth_pattern(w, h, seed):
    """Compressible source for the larger resize cases: smooth areas, hard edges, a noisy strip."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack(
        [
            255.0 * x / max(w - 1, 1),
            127.5 + 127.5 * np.cos(y / 17.0),
            255.0 * ((x // 40 + y // 30) % 2),
        ],
        axis=-1,
    )
    strip = (y >= h * 0.45) & (y < h * 0.45 + 12)
    img[strip] = rng.integers(0, 256, (int(strip.sum()), 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- hand-written PNGs
def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(rows_bytes, w, h, bit_depth, color_type, extra_chunks=()):
    """rows_bytes: list of h byte strings (unfiltered scanlines)."""
    raw = b"".join(b"\x00" + r for r in rows_bytes)
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    for kind, data in extra_chunks:
        out += png_chunk(kind, data)
    out += png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b"")
    return out


def png16(arr, color_type):
    """arr: HxWxC uint16 -> big-endian 16-bit PNG bytes."""
    h, w = arr.shape[:2]
    be = arr.astype(">u2")
    return write_png([be[i].tobytes() for i in range(h)], w, h, 16, color_type)


def pack_bits(vals, bits):
    """vals: HxW small ints -> packed scanlines, MSB first."""
    rows = []
    per = 8 // bits
    for row in vals:
        b = bytearray()
        for i in range(0, len(row), per):
            v = 0
            chunk = list(row[i : i + per]) + [0] * (per - len(row[i : i + per]))
            for c in chunk:
                v = (v << bits) | int(c)
            b.append(v)
        rows.append(bytes(b))
    return rows


# ---------------------------------------------------------------- helpers
def save_bytes(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def pillow_rgb(data):
    im = Image.open(io.BytesIO(data))
    mode = im.mode
    rgb = im.convert("RGB")
    return mode, rgb


def exif_orientation(o):
    ex = Image.Exif()
    ex[0x0112] = o
    return ex.tobytes()


def decode_cases():
    """Yields (name, ext, bytes, note)."""
    W, H = 37, 23
    rgb = pattern(W, H, 1)
    im = Image.fromarray(rgb)
    rng = np.random.default_rng(2)
    alpha = rng.integers(0, 256, (H, W), dtype=np.uint8)

    # PNG
    yield "png_rgb", "png", save_bytes(im, "PNG"), "8-bit RGB"
    rgba = Image.fromarray(np.dstack([rgb, alpha]))
    yield "png_rgba", "png", save_bytes(rgba, "PNG"), "RGBA: alpha dropped, not composited"
    gray = im.convert("L")
    yield "png_gray", "png", save_bytes(gray, "PNG"), "L replicated"
    la = Image.fromarray(np.dstack([np.asarray(gray), alpha]))
    yield "png_gray_alpha", "png", save_bytes(la, "PNG"), "LA: L replicated"
    pal = im.quantize(colors=50)
    yield "png_palette", "png", save_bytes(pal, "PNG"), "P expanded"
    pal_t = im.quantize(colors=16)
    yield "png_palette_trns", "png", save_bytes(pal_t, "PNG", transparency=3), "P + tRNS: palette colour kept"
    rgb_t = im.copy()
    yield "png_rgb_trns", "png", save_bytes(rgb_t, "PNG", transparency=(250, 5, 128)), "RGB + tRNS"
    g16 = np.random.default_rng(3).integers(0, 65536, (H, W)).astype(np.uint16)
    g16[:, :5] = np.arange(H * 5).reshape(H, 5)  # small values (< 256) survive the clip
    yield "png_gray16", "png", png16(g16[..., None], 0), "16-bit gray: I;16 -> RGB clips to 255"
    yield "png_gray16_pillow", "png", save_bytes(Image.fromarray(g16), "PNG"), "16-bit gray written by Pillow"
    c16 = np.random.default_rng(4).integers(0, 65536, (H, W, 3)).astype(np.uint16)
    yield "png_rgb16", "png", png16(c16, 2), "16-bit RGB: most significant byte"
    c16a = np.random.default_rng(5).integers(0, 65536, (H, W, 4)).astype(np.uint16)
    yield "png_rgba16", "png", png16(c16a, 6), "16-bit RGBA: most significant byte, alpha dropped"
    la16 = np.random.default_rng(6).integers(0, 65536, (H, W, 2)).astype(np.uint16)
    yield "png_gray_alpha16", "png", png16(la16, 4), "16-bit LA: opened as RGBA (LA;16B), MSB"
    bw = Image.fromarray(np.asarray(gray) > 128)
    yield "png_1bit", "png", save_bytes(bw, "PNG"), "1-bit gray"
    g2 = np.random.default_rng(7).integers(0, 4, (H, W))
    yield "png_gray2", "png", write_png(pack_bits(g2, 2), W, H, 2, 0), "2-bit gray (x85)"
    p4 = np.random.default_rng(8).integers(0, 12, (H, W))
    plte = bytes(np.random.default_rng(9).integers(0, 256, 12 * 3, dtype=np.uint8))
    yield "png_palette4", "png", write_png(pack_bits(p4, 4), W, H, 4, 3, [(b"PLTE", plte)]), "4-bit palette"

    # JPEG
    for q, sub, tag in [(75, 0, "444"), (75, 1, "422"), (75, 2, "420"), (95, 2, "420_q95"), (30, 2, "420_q30")]:
        yield f"jpeg_{tag}", "jpg", save_bytes(im, "JPEG", quality=q, subsampling=sub), f"baseline q{q}"
    big = Image.fromarray(pattern(101, 77, 10))
    yield "jpeg_420_101x77", "jpg", save_bytes(big, "JPEG", quality=85, subsampling=2), "4:2:0 odd size"
    yield "jpeg_progressive", "jpg", save_bytes(big, "JPEG", quality=80, progressive=True), "progressive 4:2:0"
    yield "jpeg_progressive_444", "jpg", save_bytes(im, "JPEG", quality=90, progressive=True, subsampling=0), "progressive 4:4:4"
    yield "jpeg_gray", "jpg", save_bytes(gray, "JPEG", quality=80), "grayscale JPEG"
    yield "jpeg_restart", "jpg", save_bytes(big, "JPEG", quality=80, restart_marker_blocks=3), "restart interval 3 MCUs"
    cmyk_arr = np.dstack([pattern(W, H, 11), pattern(W, H, 14)[..., :1]])
    cmyk = Image.frombytes("CMYK", (W, H), cmyk_arr.tobytes())
    yield "jpeg_cmyk", "jpg", save_bytes(cmyk, "JPEG", quality=90), "CMYK (Adobe, inverted)"
    yield "jpeg_exif_rot6", "jpg", save_bytes(im, "JPEG", quality=85, exif=exif_orientation(6)), "EXIF orientation 6, not applied"

    # others
    gif_frames = [im.quantize(colors=64), Image.fromarray(pattern(W, H, 12)).quantize(colors=64)]
    g = io.BytesIO()
    gif_frames[0].save(g, "GIF", save_all=True, append_images=gif_frames[1:], duration=100, loop=0)
    yield "gif_anim", "gif", g.getvalue(), "animated GIF: first frame"
    gt = im.quantize(colors=32)
    yield "gif_trns", "gif", save_bytes(gt, "GIF", transparency=2), "GIF with a transparent index"
    yield "bmp_rgb", "bmp", save_bytes(im, "BMP"), "24-bit BMP"
    yield "bmp_palette", "bmp", save_bytes(im.quantize(colors=40), "BMP"), "8-bit palette BMP"
    yield "tiff_rgb", "tif", save_bytes(im, "TIFF"), "uncompressed TIFF"
    yield "tiff_lzw", "tif", save_bytes(im, "TIFF", compression="tiff_lzw"), "LZW TIFF"
    t = io.BytesIO()
    im.save(t, "TIFF", save_all=True, append_images=[Image.fromarray(pattern(W, H, 13))])
    yield "tiff_multipage", "tif", t.getvalue(), "2-page TIFF: first page"
    yield "webp_lossless", "webp", save_bytes(im, "WEBP", lossless=True), "lossless WebP"
    yield "webp_lossy", "webp", save_bytes(big, "WEBP", quality=80), "lossy WebP"
    yield "webp_lossless_alpha", "webp", save_bytes(rgba, "WEBP", lossless=True), "lossless WebP with alpha"
    yield "webp_lossy_odd", "webp", save_bytes(im, "WEBP", quality=50), "lossy WebP, odd size"
    yield "webp_lossy_alpha", "webp", save_bytes(rgba, "WEBP", quality=70), "lossy WebP with alpha"
    yield "webp_lossy_q95_big", "webp", save_bytes(Image.fromarray(pattern(250, 131, 15)), "WEBP", quality=95), "lossy WebP q95"


def jpeg_matrix_cases():
    sizes = [(37, 23), (8, 8), (16, 16), (17, 9), (64, 48), (101, 77), (250, 131)]
    for (w, h) in sizes:
        arr = pattern(w, h, w * 1000 + h)
        im = Image.fromarray(arr)
        for q in (30, 50, 75, 90, 95, 100):
            for sub in (0, 1, 2):
                yield f"m_{w}x{h}_q{q}_s{sub}", save_bytes(im, "JPEG", quality=q, subsampling=sub)
            yield f"m_{w}x{h}_q{q}_prog", save_bytes(im, "JPEG", quality=q, progressive=True)
            yield f"m_{w}x{h}_q{q}_gray", save_bytes(im.convert("L"), "JPEG", quality=q)
            yield f"m_{w}x{h}_q{q}_rst", save_bytes(im, "JPEG", quality=q, restart_marker_rows=1)
        c = Image.frombytes("CMYK", (w, h), np.random.default_rng(w + h).integers(0, 256, w * h * 4, dtype=np.uint8).tobytes())
        yield f"m_{w}x{h}_cmyk", save_bytes(c, "JPEG", quality=85)


def ts_pillow(w, h, S):
    scale = S / max(w, h)
    return math.ceil(scale * w), math.ceil(scale * h)


RESIZE_CASES = [
    # name, (src_w, src_h), (w, h), smooth source?
    ("shrink_300x200_150x100", (300, 200), (150, 100), True),
    ("shrink_640x480_97x73", (640, 480), (97, 73), True),
    ("shrink_123x77_41x29", (123, 77), (41, 29), False),
    ("shrink_199x101_100x51", (199, 101), (100, 51), False),
    ("shrink_400x300_37x23", (400, 300), (37, 23), True),
    ("enlarge_20x15_64x48", (20, 15), (64, 48), False),
    ("enlarge_1x1_5x7", (1, 1), (5, 7), False),
    ("enlarge_2x3_9x4", (2, 3), (9, 4), False),
    ("enlarge_1x9_3x20", (1, 9), (3, 20), False),
    ("enlarge_9x1_20x3", (9, 1), (20, 3), False),
    ("enlarge_1x40_1x64", (1, 40), (1, 64), False),
    ("shrink_40x1_17x1", (40, 1), (17, 1), False),
    ("width_only_90x30_61x30", (90, 30), (61, 30), False),
    ("height_only_30x90_30x61", (30, 90), (30, 61), False),
    ("width_only_up_30x20_47x20", (30, 20), (47, 20), False),
    ("vertical_first_64x400_60x50", (64, 400), (60, 50), True),
    ("vertical_first_80x300_70x31", (80, 300), (70, 31), False),
    ("mixed_100x60_130x20", (100, 60), (130, 20), False),
    ("mixed_50x80_20x160", (50, 80), (20, 160), False),
]

PIPELINE_CASES = [
    # name, (src_w, src_h), max_size
    ("pipeline_600x525_at512", (600, 525), 512),
    ("pipeline_77x33_at64", (77, 33), 64),
    ("pipeline_30x50_at64", (30, 50), 64),
    ("pipeline_64x64_at64", (64, 64), 64),
]

TARGET_SIZE_INPUTS = [
    (600, 525, 512), (525, 600, 512), (1024, 768, 1024), (4000, 3000, 1024), (3000, 4000, 1024),
    (1, 1, 1024), (1, 1000, 1024), (1000, 1, 1024), (333, 500, 1024), (500, 333, 1024),
    (640, 480, 224), (1920, 1080, 1024), (1080, 1920, 1024), (37, 23, 64), (23, 37, 64),
    (640, 427, 1024), (2048, 1365, 1024), (999, 998, 1000), (7, 3, 10), (12345, 6789, 1024),
    (1024, 683, 1024), (1023, 1024, 1024), (100, 300, 512), (4288, 2848, 1024), (2592, 1944, 1024),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--jpeg-matrix", default=None, help="write the measurement matrix here instead")
    args = ap.parse_args()
    assert Image.__version__ == "13.0.0", Image.__version__
    assert np.__version__ == "2.3.5", np.__version__

    if args.jpeg_matrix:
        d = args.jpeg_matrix
        os.makedirs(d, exist_ok=True)
        idx = []
        for name, data in jpeg_matrix_cases():
            mode, rgb = pillow_rgb(data)
            open(os.path.join(d, name + ".jpg"), "wb").write(data)
            open(os.path.join(d, name + ".rgb"), "wb").write(rgb.tobytes())
            idx.append({"name": name, "file": name + ".jpg", "expected": name + ".rgb",
                        "width": rgb.width, "height": rgb.height, "mode": mode})
        if os.path.exists(SAMPLE_JPG):
            rgb = Image.open(SAMPLE_JPG).convert("RGB")
            open(os.path.join(d, "sample.rgb"), "wb").write(rgb.tobytes())
            idx.append({"name": "sample", "file": SAMPLE_JPG, "expected": "sample.rgb",
                        "width": rgb.width, "height": rgb.height, "mode": "RGB"})
        json.dump(idx, open(os.path.join(d, "index.json"), "w"), indent=1)
        print(f"{len(idx)} JPEG cases in {d}")
        return

    out = args.out
    os.makedirs(os.path.join(out, "decode"), exist_ok=True)
    os.makedirs(os.path.join(out, "resize"), exist_ok=True)
    index = {
        "generator": "tests/reference/make_image_fixtures.py",
        "pillow": Image.__version__,
        "numpy": np.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "decode": [], "resize": [], "pipeline": [], "target_size": [],
    }
    for name, ext, data, note in decode_cases():
        mode, rgb = pillow_rgb(data)
        f = f"decode/{name}.{ext}"
        e = f"decode/{name}.rgb"
        open(os.path.join(out, f), "wb").write(data)
        open(os.path.join(out, e), "wb").write(rgb.tobytes())
        index["decode"].append({"name": name, "file": f, "expected": e, "width": rgb.width,
                                "height": rgb.height, "mode": mode, "note": note})

    def resize_case(name, src_arr, w, h):
        src = Image.fromarray(src_arr)
        dst = src.resize((w, h), Image.Resampling.BICUBIC)
        s, o = f"resize/{name}.png", f"resize/{name}.out.png"
        src.save(os.path.join(out, s), optimize=True)
        dst.save(os.path.join(out, o), optimize=True)
        return {"name": name, "src": s, "out": o, "src_w": src.width, "src_h": src.height, "w": w, "h": h}

    for i, (name, (sw, sh), (w, h), smooth) in enumerate(RESIZE_CASES):
        arr = smooth_pattern(sw, sh, 100 + i) if smooth else pattern(sw, sh, 100 + i, noise=40.0)
        index["resize"].append(resize_case(name, arr, w, h))
    for i, (name, (sw, sh), S) in enumerate(PIPELINE_CASES):
        w, h = ts_pillow(sw, sh, S)
        arr = smooth_pattern(sw, sh, 200 + i) if sw * sh > 10000 else pattern(sw, sh, 200 + i)
        c = resize_case(name, arr, w, h)
        c["max_size"] = S
        index["pipeline"].append(c)
    for (w, h, S) in TARGET_SIZE_INPUTS:
        index["target_size"].append([w, h, S, *ts_pillow(w, h, S)])

    if os.path.exists(SAMPLE_JPG):
        rgb = Image.open(SAMPLE_JPG).convert("RGB")
        index["sample_jpg"] = {"path": SAMPLE_JPG, "width": rgb.width, "height": rgb.height,
                               "sha256": hashlib.sha256(rgb.tobytes()).hexdigest()}
    json.dump(index, open(os.path.join(out, "index.json"), "w"), indent=1)
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(out) for f in fs)
    print(f"{len(index['decode'])} decode, {len(index['resize'])} resize, {len(index['pipeline'])} pipeline cases; "
          f"{total / 1e6:.2f} MB in {out}")


if __name__ == "__main__":
    sys.exit(main())
