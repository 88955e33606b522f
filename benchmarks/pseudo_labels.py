"""Benchmark of the maps file and the pseudo-label stage at Cityscapes scale.

Generates ``--n`` maps of 1024x512 (Cityscapes train has 2,975) through the
real dump path (low-resolution logits upsampled bilinearly, Eq. 2 via
``maps_from_logits``) with spatially smooth class regions and a bimodal mix of
confident and uncertain regions per class, then times:

(a) one plain read pass (argmax + entropy of every image);
(b) the GMM stage's fitting pass (histogram + EM) and the full stage (with PNGs),
    each in a fresh subprocess with its peak RSS;
(c) scikit-learn's GaussianMixture on 1e6 pixels of one class, for reference;
plus the write cost of each maps compression option.

    python benchmarks/pseudo_labels.py --n 120 --workdir /tmp/uncerda_bench
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

H, W, C = 512, 1024, 19
LOW = (65, 129)     # DeepLab-v2 output size for a 512x1024 input
CITYSCAPES_TRAIN = 2975


def synthetic_logits(seed: int):
    """(1, C, 65, 129) logits: smooth class regions, each confident (margin 9) or uncertain (margin 1)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    def smooth(channels: int, scale: int) -> torch.Tensor:
        coarse = torch.randn(1, channels, LOW[0] // scale + 2, LOW[1] // scale + 2, generator=g)
        return F.interpolate(coarse, size=LOW, mode="bicubic", align_corners=False)
    classes = smooth(C, 8).argmax(dim=1)                                  # (1, 65, 129)
    confident = smooth(1, 6)[:, 0] > -0.3                                 # about 60 % confident
    margin = torch.where(confident, 9.0, 1.0)
    logits = 0.5 * smooth(C, 3) + margin[:, None] * F.one_hot(classes, C).permute(0, 3, 1, 2).float()
    return logits


def generate(path: Path, n: int, compression: str = "lzf", compress_floats: bool = False,
             cache: list | None = None) -> float:
    """Write ``n`` maps; return the mean write time per image (ms), excluding generation."""
    import torch
    import torch.nn.functional as F

    from uncerda_core.data.labels import CLASS_NAMES
    from uncerda_core.uncertainty.maps import MapsWriter, maps_from_logits

    write_s = 0.0
    with MapsWriter(path, n, H, W, C, CLASS_NAMES, compression=compression, compress_floats=compress_floats,
                    attrs={"provenance": {"stage": "benchmark"}}) as writer:
        for i in range(n):
            if cache is not None and i < len(cache):
                a, e, m = cache[i]
            else:
                with torch.no_grad():
                    up = F.interpolate(synthetic_logits(i), size=(H, W), mode="bilinear", align_corners=False)
                    a, e, m = (x[0] for x in maps_from_logits(up))
                if cache is not None:
                    cache.append((a, e, m))
            t = time.perf_counter()
            writer.write(i, f"frame_{i:05d}", a, e, m)
            write_s += time.perf_counter() - t
    return 1e3 * write_s / n


CHILD = r"""
import json, sys, time
import numpy as np
from uncerda_core.pseudo.labels import PseudoSettings, generate_pseudo_labels, selection_from_histogram
from uncerda_core.uncertainty.histogram import maps_histogram
from uncerda_core.uncertainty.maps import open_maps

def peak_rss_mb():
    # VmHWM, not getrusage: ru_maxrss survives execve on Linux, so a child would report its parent's peak
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

task, maps, out, cold = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "cold"
if cold:   # drop the file's pages from the page cache (works unprivileged), so reads hit the disk
    import os
    fd = os.open(maps, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
rss_before = peak_rss_mb()
t = time.perf_counter()
if task == "read":
    total = 0
    with open_maps(maps) as m:
        for name, arrays in m.iter_images(fields=("argmax", "entropy")):
            total += arrays["argmax"].size
    result = {"pixels": total}
elif task == "fit":
    hist = maps_histogram(maps, "entropy")
    t_hist = time.perf_counter() - t
    with open_maps(maps) as m:
        names = m.class_names
    table, rows = selection_from_histogram(hist, hist.sum(axis=1), PseudoSettings(), names)
    result = {"hist_s": t_hist, "em_s": time.perf_counter() - t - t_hist,
              "intervals": {r["class"]: r["intervals"] for r in rows},
              "iters": {r["class"]: int(r["n_iter"]) for r in rows}}
    np.save(out, hist)
elif task == "stage":
    generate_pseudo_labels(maps, PseudoSettings(), out)
    result = {}
result["seconds"] = time.perf_counter() - t
result["rss_after_imports_mb"] = rss_before
result["peak_rss_mb"] = peak_rss_mb()
print(json.dumps(result))
"""


def child(task: str, maps: Path, out: Path, cold: bool = False) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", CHILD, task, str(maps), str(out), "cold" if cold else "warm"],
                          capture_output=True,
                          text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def sklearn_reference(maps: Path, hist_path: Path, cls: int, n_samples: int) -> dict:
    from sklearn.mixture import GaussianMixture

    from uncerda_core.pseudo.gmm import fit_gmm_1d, selection_intervals, selection_table
    from uncerda_core.uncertainty.histogram import class_code_histogram, code_values
    from uncerda_core.uncertainty.maps import open_maps

    parts, have = [], 0
    with open_maps(maps) as m:
        for _, arrays in m.iter_images(fields=("argmax", "entropy")):
            x = arrays["entropy"][arrays["argmax"] == cls]
            parts.append(x)
            have += x.size
            if have >= n_samples:
                break
    sample16 = np.concatenate(parts)[:n_samples]
    values = code_values()
    out: dict = {"class": cls, "samples": int(sample16.size)}

    def first_upper(fit_mask):
        iv = selection_intervals(fit_mask, values)
        return iv[0][1] if iv else float("nan")

    for tol in (1e-3, 1e-10):
        gm = GaussianMixture(2, tol=tol, max_iter=1000, random_state=0)
        t = time.perf_counter()
        gm.fit(sample16.astype(np.float64)[:, None])
        secs = time.perf_counter() - t
        post = gm.predict_proba(values[:, None])
        pos = int(np.argmin(gm.means_.ravel()))
        out[f"sklearn_tol{tol:g}"] = {"seconds": secs, "threshold": first_upper(post[:, pos] > 0.5),
                                      "n_iter": int(gm.n_iter_), "means": gm.means_.ravel().tolist(),
                                      "mean_log_likelihood": float(gm.score(sample16.astype(np.float64)[:, None]))}
        sk_init = (gm.weights_, gm.means_.ravel(), gm.covariances_.ravel())
    sub_hist = class_code_histogram(np.zeros(sample16.shape, np.uint8), sample16, 1)[0]
    t = time.perf_counter()
    fit = fit_gmm_1d(values, sub_hist)
    out["ours_subsample"] = {"seconds": time.perf_counter() - t, "threshold": first_upper(selection_table(fit, values)),
                             "n_iter": fit.n_iter, "means": fit.means.tolist(),
                             "mean_log_likelihood": fit.log_likelihood / sample16.size}
    fit = fit_gmm_1d(values, sub_hist, init=sk_init)
    out["ours_from_sklearn_optimum"] = {"threshold": first_upper(selection_table(fit, values)), "n_iter": fit.n_iter,
                                        "means": fit.means.tolist(),
                                        "mean_log_likelihood": fit.log_likelihood / sample16.size}
    full = np.load(hist_path)[cls]
    t = time.perf_counter()
    fit = fit_gmm_1d(values, full)
    out["ours_all_pixels"] = {"seconds": time.perf_counter() - t, "threshold": first_upper(selection_table(fit, values)),
                              "pixels": int(full.sum()), "n_iter": fit.n_iter}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=120, help="images (Cityscapes train has 2,975)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/uncerda_bench"))
    parser.add_argument("--compression-images", type=int, default=8)
    parser.add_argument("--sklearn-samples", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()

    import torch
    torch.set_num_threads(1)
    args.workdir.mkdir(parents=True, exist_ok=True)
    report: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
                    "date": dt.date.today().isoformat(), "n": args.n, "size": [W, H]}

    # compression options: write cost per image (same arrays for every option)
    cache: list = []
    comp = {}
    for label, kw in (("none", dict(compression="none")), ("lzf argmax (default)", dict(compression="lzf")),
                      ("lzf all + shuffle", dict(compression="lzf", compress_floats=True)),
                      ("gzip-1 all + shuffle", dict(compression="gzip", compress_floats=True))):
        path = args.workdir / "comp.h5"
        generate(path, args.compression_images, cache=cache, **kw)          # warm-up
        ms = min(generate(path, args.compression_images, cache=cache, **kw) for _ in range(2))
        size = path.stat().st_size / args.compression_images
        comp[label] = {"write_ms_per_image": ms, "mb_per_image": size / 1e6,
                       "ratio": (H * W * 5) / size}
    report["compression"] = comp
    del cache

    maps = args.workdir / "maps.h5"
    t = time.perf_counter()
    report["write_ms_per_image"] = generate(maps, args.n)
    report["generate_s"] = time.perf_counter() - t
    report["maps_mb"] = maps.stat().st_size / 1e6

    def best(task: str, out: Path, cold: bool) -> dict:
        return min((child(task, maps, out, cold) for _ in range(2)), key=lambda r: r["seconds"])

    child("read", maps, args.workdir / "x")                                   # warm the page cache
    report["read"] = best("read", args.workdir / "x", False)
    report["fit"] = best("fit", args.workdir / "hist.npy", False)
    report["read_cold"] = best("read", args.workdir / "x", True)
    report["fit_cold"] = best("fit", args.workdir / "hist.npy", True)
    out = args.workdir / "pseudo"
    report["stage"] = child("stage", maps, out)
    report["png_kb_per_image"] = sum(p.stat().st_size for p in out.glob("*.png")) / args.n / 1e3
    report["fit_over_read"] = report["fit"]["seconds"] / report["read"]["seconds"]
    report["fit_over_read_cold"] = report["fit_cold"]["seconds"] / report["read_cold"]["seconds"]
    report["hist_over_read"] = report["fit"]["hist_s"] / report["read"]["seconds"]

    hist = np.load(args.workdir / "hist.npy")
    cls = int(np.argmax(hist.sum(axis=1)))
    report["sklearn"] = sklearn_reference(maps, args.workdir / "hist.npy", cls, args.sklearn_samples)
    scale = CITYSCAPES_TRAIN / args.n
    report["extrapolated_2975"] = {k: report[k]["seconds"] * scale
                                   for k in ("read", "fit", "read_cold", "fit_cold", "stage")}
    report["extrapolated_2975"]["maps_gb"] = report["maps_mb"] * scale / 1e3
    print(json.dumps(report, indent=2))
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
