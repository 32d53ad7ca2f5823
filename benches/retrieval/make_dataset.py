#!/usr/bin/env python3
"""Build the near-duplicate retrieval benchmark of README "Better vectors".

Input: the pinned Debian wallpaper packages run.py fetched (openly licensed
photographs; see SOURCES below). Output, under --out:

  db/         the database: 31 originals + the distractors (72 pictures and the
              left and right halves of each), longest side ≤ 1920, JPEG q92
  queries/    4 video copies of each original: one strong edit each (crop,
              subtitles and logo, JPEG q10, blur, rotation, flip, picture in
              picture, small size), then subtitles and logo half the time,
              a resolution from 1080p to 360p and a JPEG re-encode at q20–50
  db.txt, queries.txt   the lists for `rmac-native extract --input`
  learn.txt   the images `pca fit` learns from: the database's full pictures (what a user has)
  gnd.json    {"query path": ["its original in db/"]} for `rmac-native evaluate`
  queries.jsonl  one line per query: which original, which edit, its size

Everything is deterministic: the same packages and Pillow version give the
same bytes (the edits draw from random.Random seeded per query).
Requires Pillow (requirements.txt pins it).
"""

import argparse
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

# (package, folder inside the package, role, licence as debian/copyright says)
SOURCES = [
    ("lomiri-wallpapers-16.04", "usr/share/backgrounds", "original", "CC-BY-4.0 / CC-BY-SA-4.0 per file"),
    ("lomiri-wallpapers-20.04", "usr/share/backgrounds", "original", "CC-BY-SA-3.0"),
    ("mate-backgrounds", "usr/share/backgrounds/mate/nature", "original", "GPL-2+"),
    ("mate-backgrounds", "usr/share/backgrounds/mate/abstract", "distractor", "GPL-2+"),
    ("mate-backgrounds", "usr/share/backgrounds/mate/desktop", "distractor", "GPL-2+"),
    ("ukui-wallpapers", "usr/share/backgrounds", "distractor", "CC-BY-SA-3.0"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers", "distractor", "GPL-2+ / LGPL-3 / CC-BY-SA (debian/copyright)"),
    ("gnome-backgrounds", "usr/share/backgrounds/gnome", "distractor", "CC-BY-SA-3.0"),
]

EDITS = ["crop", "subtitles", "jpeg10", "blur", "rotate", "flip", "pip", "small"]
QUERIES_PER_ORIGINAL = 4
# Longest sides of the edited queries, cycled: video copies come at every
# resolution from 1080p down to 360p, which is what --no-enlarge is about.
QUERY_SIDES = [1920, 1280, 854, 640, 480, 360]
DB_SIDE = 1920
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def images_of(root: Path, folder: str, package: str):
    base = root / package / folder
    if package == "plasma-workspace-wallpapers":
        # Each wallpaper holds the same picture at several sizes: take the largest.
        for wall in sorted(p for p in base.iterdir() if p.is_dir()):
            sizes = sorted((wall / "contents" / "images").glob("*x*.*"),
                           key=lambda p: int(p.stem.split("x")[0]) * int(p.stem.split("x")[1]))
            if sizes:
                yield wall.name, sizes[-1]
        return
    for p in sorted(base.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
            continue
        # Same picture at several sizes (mate's Elephants): keep one.
        if p.stem.startswith("Elephants_") or p.stem.startswith("vnc-"):
            continue
        yield p.stem, p


def rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (128, 128, 128, 255))
        return Image.alpha_composite(bg, img).convert("RGB")
    return img.convert("RGB")


def fit(img: Image.Image, side: int) -> Image.Image:
    w, h = img.size
    s = side / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)


def font(size: int):
    return ImageFont.load_default(size=size)


def overlay(img: Image.Image, rng: random.Random) -> Image.Image:
    """Subtitles at the bottom and a half-transparent channel logo in a corner."""
    out = img.copy()
    w, h = out.size
    d = ImageDraw.Draw(out)
    size = max(12, h // 14)
    text = rng.choice(["— Where were you last night?", "I told you, it was the only way.",
                       "[music playing]", "We have to leave before dawn."])
    tw = d.textlength(text, font=font(size))
    d.text(((w - tw) / 2, h - 2.2 * size), text, font=font(size), fill="white",
           stroke_width=max(1, size // 12), stroke_fill="black")
    logo = Image.new("RGBA", (w // 6, h // 10), (220, 30, 30, 150))
    ImageDraw.Draw(logo).text((6, 2), "TV9", font=font(h // 14), fill=(255, 255, 255, 230))
    out.paste(logo, (w - w // 6 - w // 40, h // 30), logo)
    return out


def edit(img: Image.Image, kind: str, rng: random.Random, backgrounds) -> tuple:
    """The query's main edit, strong; returns (image, details)."""
    w, h = img.size
    if kind == "crop":
        fw, fh = rng.uniform(0.35, 0.6), rng.uniform(0.35, 0.6)
        cw, ch = int(w * fw), int(h * fh)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        return img.crop((x, y, x + cw, y + ch)), {"keep": [round(fw, 3), round(fh, 3)]}
    if kind == "subtitles":
        return overlay(img, rng), {}
    if kind == "jpeg10":
        return img, {}
    if kind == "blur":
        r = rng.uniform(4.0, 7.0) * max(w, h) / 1920
        return img.filter(ImageFilter.GaussianBlur(r)), {"radius": round(r, 2)}
    if kind == "rotate":
        a = rng.choice([-1, 1]) * rng.uniform(6, 15)
        return img.rotate(a, resample=Image.Resampling.BICUBIC, expand=False), {"degrees": round(a, 2)}
    if kind == "flip":
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), {}
    if kind == "pip":
        bg = fit(rgb(Image.open(rng.choice(backgrounds))), max(w, h)).resize((w, h))
        bg = bg.filter(ImageFilter.GaussianBlur(8))
        f = rng.uniform(0.3, 0.5)
        small = img.resize((int(w * f), int(h * f)), Image.Resampling.LANCZOS)
        x = rng.randint(w // 20, w - small.width - w // 20)
        y = rng.randint(h // 20, h - small.height - h // 20)
        bg.paste(small, (x, y))
        return bg, {"scale": round(f, 3)}
    if kind == "small":
        return fit(img, rng.choice([160, 200, 240])), {}
    raise ValueError(kind)


def video_copy(img: Image.Image, kind: str, i: int, j: int, rng: random.Random, backgrounds) -> tuple:
    """A video copy: the main edit, then what every copy goes through: half the
    time subtitles and a logo, a resolution from 1080p down to 360p, and a
    low-quality re-encode. Returns (image, JPEG quality, details)."""
    img, details = edit(img, kind, rng, backgrounds)
    if kind != "subtitles" and rng.random() < 0.5:
        img = overlay(img, rng)
        details["overlay"] = True
    if kind != "small":
        img = fit(img, QUERY_SIDES[(3 * i + j) % len(QUERY_SIDES)])
    quality = 10 if kind == "jpeg10" else rng.randint(20, 50)
    details["quality"] = quality
    return img, quality, details


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packages", required=True, type=Path, help="folder with one extracted package per subfolder")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    out = args.out.resolve()
    (out / "db").mkdir(parents=True, exist_ok=True)
    (out / "queries").mkdir(parents=True, exist_ok=True)

    originals, distractors = [], []
    for package, folder, role, _licence in SOURCES:
        for name, path in images_of(args.packages, folder, package):
            (originals if role == "original" else distractors).append((f"{package}--{name}", path))

    db_paths = []
    for name, path in originals + distractors:
        dst = out / "db" / f"{name}.jpg"
        if not dst.exists():
            fit(rgb(Image.open(path)), DB_SIDE).save(dst, quality=92)
        db_paths.append(str(dst))
    # More distractors: the left and right halves of each distractor, which
    # look like other pictures of the same places (never of an original).
    for name, _ in distractors:
        full = Image.open(out / "db" / f"{name}.jpg")
        w, h = full.size
        for side, box in (("left", (0, 0, w // 2, h)), ("right", (w - w // 2, 0, w, h))):
            dst = out / "db" / f"{name}--{side}.jpg"
            if not dst.exists():
                full.crop(box).save(dst, quality=92)
            db_paths.append(str(dst))

    # PiP backgrounds: distractors only, so a query's one relevant image stays its original.
    backgrounds = [p for _, p in distractors]
    gnd, meta, query_paths = {}, [], []
    for i, (name, path) in enumerate(originals):
        base = Image.open(out / "db" / f"{name}.jpg").convert("RGB")
        for j in range(QUERIES_PER_ORIGINAL):
            kind = EDITS[(QUERIES_PER_ORIGINAL * i + j) % len(EDITS)]
            rng = random.Random(f"{name}/{j}")
            img, quality, details = video_copy(base, kind, i, j, rng, backgrounds)
            dst = out / "queries" / f"{name}--{j}-{kind}.jpg"
            img.save(dst, quality=quality)
            query_paths.append(str(dst))
            gnd[str(dst)] = [str(out / "db" / f"{name}.jpg")]
            meta.append({"query": str(dst), "original": name, "edit": kind,
                         "size": list(img.size), **details})

    (out / "db.txt").write_text("\n".join(db_paths) + "\n")
    # Whitening learns from the full pictures of the database (not the halves: fewer passes).
    (out / "learn.txt").write_text("\n".join(db_paths[: len(originals) + len(distractors)]) + "\n")
    (out / "queries.txt").write_text("\n".join(query_paths) + "\n")
    (out / "gnd.json").write_text(json.dumps(gnd, indent=1, sort_keys=True) + "\n")
    (out / "queries.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    print(f"{len(originals)} originals, {len(distractors)} distractors, {len(query_paths)} queries -> {out}")


if __name__ == "__main__":
    main()
