#!/usr/bin/env python3
"""The near-duplicate retrieval benchmark of README "Better vectors (opt-in)".

    python3 benches/retrieval/run.py --bin target/release/rmac-native \\
        --weights ~/.cache/rmac-native/vgg16.safetensors [--work target/retrieval] [--sizes 512,1024]

1. fetches the pinned Debian packages of openly licensed photographs
   (`apt-get download PACKAGE=VERSION`, sha256-checked) and unpacks them;
2. builds the benchmark with make_dataset.py (Pillow pinned in
   requirements.txt, in a virtual environment of its own);
3. for each --max-size: extracts the database and the queries with each
   opt-in knob alone, learns the whitenings with `pca fit`, runs `dba`, scores
   every run with `evaluate` (αQE with `evaluate --qe`), then the best
   combination (every knob that helped alone, with the best whitening);
4. writes results.json and prints the README's tables (markdown).

Every step keeps its output under --work and is skipped when it is there
(an interrupted run goes on where it stopped; delete a run's folder to redo
it). Only the standard library: run it with any python3 ≥ 3.9.
Nothing it fetches or makes belongs in the repository.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Debian 12 (bookworm) packages: (package, version, .deb sha256). The photos'
# licences are in each package's debian/copyright (make_dataset.SOURCES says
# which folder plays which role). If a version leaves the mirror, fetch the
# same file from https://snapshot.debian.org/ (the sha256 is what counts).
PACKAGES = [
    ("lomiri-wallpapers-16.04", "20.04.0-2", "a99ff6a3bfe451e4cc0682ecb3cc82e71740626d59e4845ae34a0a0e45421eab"),
    ("lomiri-wallpapers-20.04", "20.04.0-2", "d44e89b8473aafe64a5b678f014862dc31335aaaf18665c544d985d854f1a709"),
    ("mate-backgrounds", "1.26.0-1", "7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04"),
    ("ukui-wallpapers", "20.04.3-1.1", "6d49be70152e6d603163458e177e501deb0be8f2916389ccbfcf59b0d7fc0262"),
    ("plasma-workspace-wallpapers", "4:5.27.5-2", "32cd18b71c8c938a18b3b351f217c02ac590e323caa3cf322fbb875ce8892f8b"),
    ("gnome-backgrounds", "43.1-1", "a670dea21572652127d6e55f9cdb3a226d0037854fdbfd037003c7d00ee0dc4e"),
]

# The opt-in knobs, each alone on top of plain keras_rmac (no whitening).
EXTRACT_KNOBS = {
    "no-enlarge": ["--no-enlarge"],
    "multi-scale": ["--scales", "1,0.7071,0.5"],
    "gem": ["--pool", "gem", "--gem-p", "3"],
}
QE = (2, 3.0)  # αQE: the first 2 results, weights score^3 (Radenović et al.)
DBA = (2, 3.0)  # dba -k 2 --alpha 3
SHRINKS = [0.03, 0.1, 0.3, 1.0, 3.0]  # `pca fit --shrink` candidates, chosen at the first size


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(work: Path) -> Path:
    debs, packages = work / "debs", work / "packages"
    debs.mkdir(parents=True, exist_ok=True)
    packages.mkdir(parents=True, exist_ok=True)
    for name, version, digest in PACKAGES:
        unpacked = packages / name
        if (unpacked / ".done").exists():
            continue
        found = [p for p in debs.glob(f"{name}_*.deb")]
        if not found:
            subprocess.run(["apt-get", "download", f"{name}={version}"], cwd=debs, check=True)
            found = [p for p in debs.glob(f"{name}_*.deb")]
        deb = found[0]
        got = sha256(deb)
        if got != digest:
            sys.exit(f"{deb}: sha256 {got}, expected {digest} ({name} {version}); delete it and fetch "
                     f"{name}_{version} from https://snapshot.debian.org/")
        shutil.rmtree(unpacked, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
        (unpacked / ".done").write_text(digest + "\n")
    return packages


def copies_ground_truth(data: Path):
    """gnd-copies.json: each query's positives are its original and the other
    copies of the same original (all of them in the all-copies index)."""
    gnd = json.loads((data / "gnd.json").read_text())
    copies = {}
    for query, (original,) in gnd.items():
        copies.setdefault(original, []).append(query)
    out = {q: [o] + [c for c in copies[o] if c != q] for q, (o,) in gnd.items()}
    (data / "gnd-copies.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


def make_data(work: Path, packages: Path) -> Path:
    data = work / "data"
    if (data / "gnd.json").exists():
        copies_ground_truth(data)
        return data
    venv = work / "venv"
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "-r", str(HERE / "requirements.txt")],
                       check=True)
    subprocess.run([str(py), str(HERE / "make_dataset.py"), "--packages", str(packages), "--out", str(data)],
                   check=True)
    copies_ground_truth(data)
    return data


class Bench:
    def __init__(self, args, data: Path):
        self.bin = str(Path(args.bin).resolve())
        self.eval_bin = str(Path(args.eval_bin or args.bin).resolve())
        self.weights = str(Path(args.weights).expanduser().resolve())
        self.work = Path(args.work).resolve()
        self.data = data
        self.threads = args.threads
        self.n_db = len((data / "db.txt").read_text().split())
        self.n_q = len((data / "queries.txt").read_text().split())
        self.results_file = self.work / "results.json"
        self.results = json.loads(self.results_file.read_text()) if self.results_file.exists() else {}

    def run(self, cmd, log: Path):
        print("+", " ".join(cmd), flush=True)
        t = time.monotonic()
        with open(log, "a") as out:
            r = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}; see {log}")
        return time.monotonic() - t

    def common(self, size, flags):
        return ["--weights", self.weights, "--max-size", str(size), "--backend", "cpu",
                "--threads", str(self.threads), *flags]

    def fit(self, size, flags, shrink, dim, name):
        """`pca fit` on the database images with the same knobs; (file, seconds)."""
        folder = self.work / "runs" / str(size) / "pca" / name
        folder.mkdir(parents=True, exist_ok=True)
        pca = folder / "pca.safetensors"
        timing = folder / "seconds"
        if not pca.exists():
            s = self.run([self.bin, "pca", "fit", "--input", str(self.data / "learn.txt"), "--output", str(pca),
                          "--shrink", str(shrink), "--dim", str(dim), *self.common(size, flags)],
                         folder / "log.txt")
            timing.write_text(f"{s}\n")
        return pca, float(timing.read_text())

    def extract(self, size, flags, pca, name):
        """Database and query vectors (NPY); seconds per image over both."""
        folder = self.work / "runs" / str(size) / name
        folder.mkdir(parents=True, exist_ok=True)
        timing = folder / "seconds"
        if not timing.exists():
            total = 0.0
            for part in ("db", "queries"):
                out = folder / f"{part}.npy"
                total += self.run([self.bin, "extract", "--input", str(self.data / f"{part}.txt"),
                                   "--output", str(out), "--pca", str(pca), *self.common(size, flags)],
                                  folder / "log.txt")
                errors = folder / f"{part}.errors.jsonl"
                if errors.exists() and errors.stat().st_size > 0:
                    sys.exit(f"extract wrote errors: {errors}")
            timing.write_text(f"{total}\n")
        return folder, float(timing.read_text()) / (self.n_db + self.n_q)

    def evaluate(self, index: Path, queries, gnd: Path, qe=None):
        cmd = [self.eval_bin, "evaluate", str(index), "--gnd", str(gnd), "-k", "1,5,10", "--json"]
        if queries:
            cmd += ["--queries", str(queries)]
        if qe:
            cmd += ["--qe", str(qe[0]), "--alpha", str(qe[1])]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"evaluate failed: {r.stderr}")
        res = json.loads(r.stdout)[0]
        return {"map": res["map"], "r1": res["hit_at_k"][0], "aps": res["aps"]}

    def all_index(self, folder: Path) -> Path:
        """The database and the queries in one index (`convert` appends), for
        the all-copies protocol."""
        out = folder / "all.jsonl"
        done = folder / "all.done"
        if not done.exists():
            for part in ("db", "queries"):
                self.run([self.eval_bin, "convert", str(folder / f"{part}.npy"), str(out)], folder / "log.txt")
            done.write_text("")
        return out

    def dba(self, index: Path, k, alpha):
        out = index.with_name(f"{index.stem}-dba{k}-{alpha}{index.suffix}")
        done = out.with_suffix(".done")
        if not done.exists():
            self.run([self.eval_bin, "dba", str(index), "-k", str(k), "--alpha", str(alpha),
                      "--output", str(out)], index.parent / "log.txt")
            done.write_text("")
        return out

    def row(self, size, name, flags, whitening=None, post=None):
        """One table row: extract (with a fitted whitening), optional αQE/DBA, evaluate."""
        key = f"{size}/{name}"
        if key in self.results:
            return self.results[key]
        fit_s = None
        if whitening:
            shrink, dim = whitening
            pca, fit_s = self.fit(size, flags, shrink, dim, f"{name}")
        else:
            pca = "none"
        # αQE and DBA change nothing at extraction: they reuse the plain vectors.
        extraction = "plain" if post and not flags and not whitening else name
        folder, per_image = self.extract(size, flags, pca, extraction)
        # Two protocols. "copies": the queries are in the index too, and each
        # query's positives are its original and the other copies of it (what a
        # dedup or a "find every copy" search asks). "original": the index is
        # the database alone, one positive per query (copy detection).
        qe = QE if post and "aqe" in post else None
        index, db = self.all_index(folder), folder / "db.npy"
        if post and "dba" in post:
            index, db = self.dba(index, *DBA), self.dba(db, *DBA)
        scores = self.evaluate(index, None, self.data / "gnd-copies.json", qe)
        original = self.evaluate(db, folder / "queries.npy", self.data / "gnd.json", qe)
        scores.update({"map_original": original["map"], "r1_original": original["r1"]})
        row = {"size": size, "name": name, "flags": flags, "whitening": whitening, "post": post,
               "seconds_per_image": per_image, "fit_seconds": fit_s, **scores}
        self.results[key] = row
        self.results_file.write_text(json.dumps(self.results, indent=1) + "\n")
        print(f"{key}: mAP {100 * row['map']:.2f}, R@1 {100 * row['r1']:.2f}, "
              f"original only {100 * row['map_original']:.2f}, {per_image:.3f} s/image",
              flush=True)
        return row

    def time_rows(self, sizes, n, only=None):
        """Seconds per image of every row's extraction on the same n images
        (half database, half queries), one row after the other: the main runs'
        own timings are only as good as the machine was quiet. Run it alone."""
        db = (self.data / "db.txt").read_text().split()
        qs = (self.data / "queries.txt").read_text().split()
        subset = self.work / "timing.txt"
        subset.write_text("\n".join(db[: n // 2] + qs[: n - n // 2]) + "\n")
        for key, row in sorted(self.results.items()):
            size = row["size"]
            if size not in sizes or "/whiten-shrink-" in key:
                continue  # the sweep: the chosen one is timed as whiten-shrunk
            if only and row["name"] not in only:
                continue
            folder = self.work / "runs" / str(size) / row["name"]
            if row["post"] and not row["flags"] and not row["whitening"]:
                continue  # αQE, DBA: the plain extraction (their own cost is a search)
            pca = "none"
            if row["whitening"]:
                pca = str(self.work / "runs" / str(size) / "pca" / row["name"] / "pca.safetensors")
            out = folder / "timing.npy"
            for f in folder.glob("timing*"):
                f.unlink()
            secs = self.run([self.bin, "extract", "--input", str(subset), "--output", str(out),
                             "--pca", pca, *self.common(size, row["flags"])], folder / "log.txt")
            row["quiet_seconds_per_image"] = secs / n
            print(f"{key}: {secs / n:.3f} s/image alone", flush=True)
        for key, row in self.results.items():
            if key.endswith("/whiten-shrunk"):
                src = self.results[f"{row['size']}/{row['name']}"]
                src["quiet_seconds_per_image"] = row.get("quiet_seconds_per_image")
            if row["post"] and not row["flags"] and not row["whitening"]:
                row["quiet_seconds_per_image"] = self.results[f"{row['size']}/plain"].get("quiet_seconds_per_image")
        self.results_file.write_text(json.dumps(self.results, indent=1) + "\n")

    def size(self, size, first):
        """Every row at one --max-size. The first size sweeps --shrink and picks
        the best combination from its rows; a later size (`first` = the first
        size's (shrink, best row)) reuses both, adding --no-enlarge where it
        helps at that size, so its expensive rows come in the order of what the
        README needs most."""
        plain = self.row(size, "plain", [])
        rows = {"plain": plain}
        helped = lambda n: rows[n]["map"] > plain["map"]  # noqa: E731
        rows["aqe"] = self.row(size, "aqe", [], post=["aqe"])
        rows["dba"] = self.row(size, "dba", [], post=["dba"])
        rows["no-enlarge"] = self.row(size, "no-enlarge", EXTRACT_KNOBS["no-enlarge"])
        if first is not None:
            shrink, best = first
            flags = [f for f in best["flags"] if f != "--no-enlarge"]
            if helped("no-enlarge"):
                flags = EXTRACT_KNOBS["no-enlarge"] + flags
            rows["best"] = self.row(size, "best", flags, best["whitening"], best["post"])
        for name in ("multi-scale", "gem"):
            rows[name] = self.row(size, name, EXTRACT_KNOBS[name])
        if first is None:
            sweep = {a: self.row(size, f"whiten-shrink-{a}", [], (a, 512)) for a in SHRINKS}
            shrink = max(sweep, key=lambda a: (sweep[a]["map"], -a))
        rows["whiten-128"] = self.row(size, "whiten-128", [], (shrink, 128))
        rows["whiten-256"] = self.row(size, "whiten-256", [], (shrink, 256))
        rows["whiten-shrunk"] = self.row(size, f"whiten-shrink-{shrink}", [], (shrink, 512))
        self.results[f"{size}/whiten-shrunk"] = rows["whiten-shrunk"]
        rows["whiten"] = self.row(size, "whiten", [], (0.0, 512))
        if first is None:
            # The best combination: every knob that helped alone, with the best whitening.
            flags = [f for n, fl in EXTRACT_KNOBS.items() if helped(n) for f in fl]
            whitenings = [n for n in ("whiten", "whiten-shrunk", "whiten-256", "whiten-128") if helped(n)]
            best_w = max(whitenings, key=lambda n: rows[n]["map"]) if whitenings else None
            post = [p for p in ("aqe", "dba") if helped(p)]
            rows["best"] = self.row(size, "best", flags, rows[best_w]["whitening"] if best_w else None, post)
        return shrink, rows["best"]


def table(results, sizes, queries_meta):
    names = [("plain", "keras_rmac, no whitening (the default with `--pca none`)"),
             ("whiten", "+ learned whitening (`pca fit`)"),
             ("whiten-shrunk", "+ learned whitening, shrunk (`pca fit --shrink A`)"),
             ("whiten-256", "+ … reduced to 256 dimensions (`--dim 256`)"),
             ("whiten-128", "+ … reduced to 128 dimensions (`--dim 128`)"),
             ("no-enlarge", "`--no-enlarge`"),
             ("multi-scale", "`--scales 1,0.7071,0.5`"),
             ("gem", "`--pool gem --gem-p 3`"),
             ("aqe", f"αQE (`--qe {QE[0]} --alpha {QE[1]:g}`)"),
             ("dba", f"DBA (`dba -k {DBA[0]} --alpha {DBA[1]:g}`)"),
             ("best", "best combination")]

    def find(size, name):
        return results.get(f"{size}/{name}")

    head = "| vectors | " + " | ".join(f"mAP {s} | R@1 {s} | mAP {s}, original only | s/image {s}"
                                      for s in sizes) + " |"
    lines = [head, "|" + "---|" * (1 + 4 * len(sizes))]
    for name, label in names:
        cells = []
        for s in sizes:
            r = find(s, name)
            if r is None:
                cells += ["", "", "", ""]
                continue
            extra = ""
            if name == "whiten-shrunk":
                extra = f" (A = {r['whitening'][0]:g})"
            if name == "best":
                parts = [*r["flags"]]
                if r["whitening"]:
                    parts.append(f"whitening shrink {r['whitening'][0]:g} dim {r['whitening'][1]}")
                parts += r["post"] or []
                extra = f" ({' '.join(parts)})" if parts else ""
            secs = r.get("quiet_seconds_per_image") or r["seconds_per_image"]
            cells += [f"{100 * r['map']:.1f}{extra}", f"{100 * r['r1']:.1f}",
                      f"{100 * r['map_original']:.1f}", f"{secs:.2f}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    # mAP per edit for the rows the README discusses.
    edits = sorted({m["edit"] for m in queries_meta})
    order = sorted(range(len(queries_meta)), key=lambda i: queries_meta[i]["query"])
    per_edit = ["", "| mAP per edit | " + " | ".join(edits) + " |", "|" + "---|" * (1 + len(edits))]
    for s in sizes:
        for name in ("plain", "no-enlarge", "multi-scale", "best"):
            r = results.get(f"{s}/{name}")
            if r is None:
                continue
            by = {e: [] for e in edits}
            for pos, i in enumerate(order):
                by[queries_meta[i]["edit"]].append(r["aps"][pos])
            per_edit.append(f"| {name} {s} | " + " | ".join(
                f"{100 * sum(v) / len(v):.1f}" for v in (by[e] for e in edits)) + " |")
    return "\n".join(lines + per_edit)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True, help="the rmac-native binary")
    ap.add_argument("--eval-bin", help="the binary for `evaluate` (default: --bin)")
    ap.add_argument("--weights", required=True, help="the genuine VGG16 weights (safetensors)")
    ap.add_argument("--work", default="target/retrieval", help="where everything goes (not committed)")
    ap.add_argument("--sizes", default="512,1024")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--timing", type=int, metavar="N",
                    help="after the runs, time every row's extraction alone on N images (e.g. 24)")
    ap.add_argument("--timing-rows", help="with --timing: only these rows (comma-separated names), e.g. "
                    "the ones that ran while the machine was busy")
    ap.add_argument("--packages", help="already unpacked packages (one folder each), instead of fetching")
    args = ap.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    packages = Path(args.packages).resolve() if args.packages else fetch(work)
    data = make_data(work, packages)
    bench = Bench(args, data)
    sizes = [int(s) for s in args.sizes.split(",")]
    first = None
    for s in sizes:
        first = bench.size(s, first)
    if args.timing:
        bench.time_rows(sizes, args.timing, args.timing_rows.split(",") if args.timing_rows else None)
    meta = [json.loads(line) for line in (data / "queries.jsonl").read_text().splitlines()]
    print(f"\n{bench.n_db} database images, {bench.n_q} queries; machine: {os.uname().nodename}, "
          f"{os.cpu_count()} CPUs\n")
    print(table(bench.results, sizes, meta))


if __name__ == "__main__":
    main()
