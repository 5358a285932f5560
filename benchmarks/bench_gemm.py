"""GEMM throughput (GMAC/s) of every qruntime ISA path side by side with numpy fp32, torch fp32 and torch int8 Linear."""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import qruntime

DEFAULT_SHAPES = [
    (1, 1024, 1024),
    (16, 1024, 1024),
    (256, 1024, 1024),
    (128, 768, 3072),
    (3136, 576, 64),
    (12544, 27, 32),
]
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "bench_gemm.json"
DEFAULT_PEAK = Path(__file__).resolve().parents[2] / "shared" / "tools" / "peak"  # beside the repo (DESIGN.md §9)
# The avx2 path's two kernels, each fed weights that route every panel to it (docs/kernels.md, "avx2").
# Weights that route every panel: [-16, 16] also pairs every group of 4 K (3 multiplies per 64 MACs).
AVX2_KERNELS = [("vpmaddubsw", 64), ("vpmaddwd", 127), ("paired", 16)]
PEERS = ["numpy-fp32", "torch-fp32", "torch-int8-x86", "torch-int8-onednn"]
OPENBLAS_ENV = ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"]
# Column labels (two header lines) for the engines that have no ISA of their own.
PEER_LABELS = {
    "numpy-fp32": ("numpy", "fp32"),
    "torch-fp32": ("torch", "fp32"),
    "torch-int8-x86": ("torch-int8", "x86"),
    "torch-int8-onednn": ("torch-int8", "onednn"),
}


def _split(values):
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--shapes", action="append", default=[], metavar="MxKxN",
                   help="e.g. 256x1024x1024; repeatable or comma-separated (default: the six standard shapes)")
    p.add_argument("--threads", action="append", default=[], metavar="N",
                   help="thread counts; repeatable or comma-separated (default: 1,2)")
    p.add_argument("--isas", action="append", default=[], metavar="ISA",
                   help="qruntime ISA paths; repeatable or comma-separated "
                        "(default: qruntime.available_isas(), which leaves out the test-only emulated paths)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"output records (default: {DEFAULT_JSON})")
    p.add_argument("--min-time", type=float, default=0.3, help="seconds of timed calls per measurement (default: 0.3)")
    p.add_argument("--peak", type=Path, default=DEFAULT_PEAK,
                   help=f"the peak tool the avx2 kernels are rated against (default: {DEFAULT_PEAK})")
    args = p.parse_args(argv)

    try:
        args.shapes = [tuple(int(d) for d in s.lower().split("x")) for s in _split(args.shapes)] or DEFAULT_SHAPES
    except ValueError as e:
        p.error(f"bad --shapes: {e}")
    if any(len(s) != 3 or min(s) < 1 for s in args.shapes):
        p.error("--shapes takes MxKxN with three positive integers, e.g. 256x1024x1024")
    parse_threads_and_isas(p, args)
    if args.min_time <= 0:
        p.error("--min-time must be > 0")
    return args


def parse_threads_and_isas(p, args):
    """--threads (default 1 and 2) and --isas (default: the real paths) for every benchmark script."""
    try:
        args.threads = [int(t) for t in _split(args.threads)] or [1, 2]
    except ValueError as e:
        p.error(f"bad --threads: {e}")
    if min(args.threads) < 1:
        p.error("--threads must be >= 1")
    known = qruntime.available_isas(emulated=True)
    args.isas = _split(args.isas) or qruntime.available_isas()
    unknown = [i for i in args.isas if i not in known]
    if unknown:
        p.error(f"--isas {unknown} not on this machine; known: {known}")


def measure(fn, min_time):
    """Median seconds per call of fn: warm up, then time batches of calls until min_time has passed."""
    t0 = time.perf_counter()
    fn()  # first call pays lazy set-up and page faults
    first = time.perf_counter() - t0
    # Batch tiny calls so a sample lasts ~1 ms: timer resolution and jitter would dominate otherwise.
    batch = max(1, int(1e-3 / max(first, 1e-7)))
    warm_until = time.perf_counter() + min(0.1, min_time / 3)
    while time.perf_counter() < warm_until:
        fn()
    samples = []
    start = time.perf_counter()
    while len(samples) < 5 or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - t0) / batch)
    return statistics.median(samples)


class Problem:
    """One shape's operands: the same quantized integers feed qruntime and torch int8; fp32 engines get them dequantized."""

    def __init__(self, m, k, n, rng):
        self.m, self.k, self.n = m, k, n
        self.x_q = rng.integers(0, 256, (m, k), dtype=np.uint8)
        self.w_q = rng.integers(-127, 128, (n, k), dtype=np.int8)
        self.x_scale, self.x_zp = 0.02, 128
        self.w_scale = (rng.uniform(0.5, 1.5, n) / (127 * math.sqrt(k))).astype(np.float32)
        self.bias = rng.normal(0.0, 0.1, n).astype(np.float32)
        self.x_f = ((self.x_q.astype(np.float32) - self.x_zp) * self.x_scale).astype(np.float32)
        self.w_f = self.w_q.astype(np.float32) * self.w_scale[:, None]
        # Output quantization from a float reference on a few rows, so requantization neither clips nor
        # collapses everything (either would be an unrealistic workload).
        y = self.x_f[:64] @ self.w_f.T + self.bias
        lo, hi = min(float(y.min()), 0.0), max(float(y.max()), 0.0)
        self.out_scale = max(hi - lo, 1e-6) / 255
        self.out_zp = int(np.clip(round(-lo / self.out_scale), 0, 255))


_torch = None


def torch():
    """torch, imported on first use only: qruntime itself must not need it."""
    global _torch
    if _torch is None:
        # torch deprecates quantized tensor creation; the warning is noise in a benchmark table.
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)
        import torch as t

        _torch = t
    return _torch


def build(engine, isa, p):
    """A zero-argument call to time; weights are prepacked here, outside the timed loop."""
    if engine == "qruntime":
        w = qruntime.ops.pack_weights(p.w_q, isa=isa)
        return lambda: qruntime.ops.gemm_u8s8s32(p.x_q, w)
    if engine == "qruntime-linear":
        w = qruntime.ops.pack_weights(p.w_q, isa=isa)
        args = (p.x_q, p.x_scale, p.x_zp, w, p.w_scale, p.bias, p.out_scale, p.out_zp)
        return lambda: qruntime.ops.linear(*args)
    if engine == "numpy-fp32":
        wt = np.ascontiguousarray(p.w_f.T)  # prepacked: K x N, no transpose at call time
        x = p.x_f
        return lambda: x @ wt
    t = torch()
    if engine == "torch-fp32":
        x, w, b = t.from_numpy(p.x_f), t.from_numpy(p.w_f), t.from_numpy(p.bias)
        linear = t.nn.functional.linear
        return lambda: linear(x, w, b)
    if engine.startswith("torch-int8-"):
        # The engine must be current both when packing and when calling; it stays set while this is timed.
        t.backends.quantized.engine = engine.removeprefix("torch-int8-")
        scales = t.from_numpy(p.w_scale.astype(np.float64))
        w_q = t.quantize_per_channel(t.from_numpy(p.w_f), scales, t.zeros(p.n, dtype=t.long), 0, t.qint8)
        x_q = t.quantize_per_tensor(t.from_numpy(p.x_f), p.x_scale, p.x_zp, t.quint8)
        packed = t.ops.quantized.linear_prepack(w_q, t.from_numpy(p.bias))
        linear, out_scale, out_zp = t.ops.quantized.linear, p.out_scale, p.out_zp
        return lambda: linear(x_q, packed, out_scale, out_zp)
    raise ValueError(f"unknown engine {engine!r}")


class Threads:
    """Sets one thread count for qruntime, torch (once imported) and numpy's BLAS (via threadpoolctl, if installed)."""

    def __init__(self):
        try:
            import threadpoolctl
        except ImportError:
            threadpoolctl = None
        self.threadpoolctl = threadpoolctl

    def blas_note(self):
        if self.threadpoolctl is None:
            return "numpy BLAS: threads NOT controlled (pip install threadpoolctl); numpy-fp32 uses its default"
        libs = [i for i in self.threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        desc = ", ".join(f"{i['internal_api']} {i.get('version')} ({i.get('architecture', '?')})" for i in libs)
        return f"numpy BLAS: {desc or 'none found'}; threads set via threadpoolctl"

    def set(self, n):
        qruntime.set_num_threads(n)
        if _torch is not None:
            _torch.set_num_threads(n)
        if self.threadpoolctl is not None:
            self.threadpoolctl.threadpool_limits(limits=n, user_api="blas")


def cpu_busy_seconds():
    """CPU-seconds all processes have spent busy since boot (Linux /proc/stat), or None elsewhere."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def avx2_peaks(tool):
    """{(path, threads): GMAC/s} for the peak tool's int8 AVX2 probes (1 thread and all CPUs), or an error string."""
    try:
        out = subprocess.run([str(tool), "--json"], capture_output=True, text=True, timeout=300, check=True).stdout
        rows = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        return f"peak tool {tool} unusable: {type(e).__name__}: {e}"
    peaks = {}
    for r in rows:
        if r["path"] in ("int8_avx2_saturating", "int8_avx2_exact"):
            peaks[r["path"], 1] = r["gmacs_1t"]
            peaks[r["path"], r["cpus"]] = r["gmacs_all"]
    return peaks


def avx2_kernel_rows(args, threads, peaks, records):
    """Both avx2 kernels on every shape and thread count, as GMAC/s and % of the peak tool's rates."""
    print()
    if isinstance(peaks, str):
        print(f"avx2 kernels ({peaks}; GMAC/s only)")
        peaks = {}
    else:
        counts = sorted({t for _, t in peaks})
        rates = [f"{path} " + " / ".join(f"{peaks[path, t]:.1f}" for t in counts)
                 for path in ("int8_avx2_saturating", "int8_avx2_exact")]
        print(f"avx2 kernels against the peak tool: {', '.join(rates)} GMAC/s at "
              f"{' / '.join(map(str, counts))} threads")
    print("weights in [-64, 64] route every panel to vpmaddubsw, full-range ones to vpmaddwd, [-16, 16] pair the "
          "groups of 4 K on vpmaddubsw; 'ran' is what PackedWeights.kernel_choice reports")
    print(f"{'M x K x N':>16} {'thr':>3} {'kernel':>11} {'weights':>11} {'ran':>16} {'GMAC/s':>8} "
          f"{'% saturating':>13} {'% exact':>8}")
    rng = np.random.default_rng(1)
    for m, k, n in args.shapes:
        a = rng.integers(0, 256, (m, k), dtype=np.uint8)
        packed = {}
        for kernel, limit in AVX2_KERNELS:
            w = qruntime.ops.pack_weights(rng.integers(-limit, limit + 1, (n, k), dtype=np.int8), isa="avx2")
            ran = w.kernel_choice.split(":")[0]
            ran = "mixed" if " on " in ran else ran  # "vpmaddubsw on 3 of 4 panels, vpmaddwd on 1: ..."
            ran += "+pairs" if "summed in int16 pairs" in w.kernel_choice else ""
            packed[kernel] = (w, limit, ran)
        for nt in args.threads:
            threads.set(nt)
            for kernel, (w, limit, ran) in packed.items():
                gmacs = m * k * n / measure(lambda: qruntime.ops.gemm_u8s8s32(a, w), args.min_time) / 1e9
                pct = {path: 100 * gmacs / peaks[path, nt] if (path, nt) in peaks else None
                       for path in ("int8_avx2_saturating", "int8_avx2_exact")}
                records.append({"engine": f"qruntime-avx2-{kernel}", "isa": "avx2", "threads": nt, "M": m, "K": k,
                                "N": n, "gmacs": gmacs, "weights": [-limit, limit], "ran": ran,
                                "pct_of_peak_saturating": pct["int8_avx2_saturating"],
                                "pct_of_peak_exact": pct["int8_avx2_exact"]})
                text = [f"{p:.0f} %" if p is not None else "-" for p in pct.values()]
                print(f"{f'{m}x{k}x{n}':>16} {nt:>3} {kernel:>11} {f'[-{limit}, {limit}]':>11} {ran:>16} "
                      f"{fmt(gmacs):>8} {text[0]:>13} {text[1]:>8}", flush=True)


def fmt(g):
    return f"{g:.1f}" if g >= 10 else f"{g:.2f}"


def best_linear_ratios(cells):
    """(best qruntime-linear GMAC/s / torch-fp32, / faster torch int8) for one row, None where missing."""
    best = max((r["gmacs"] for r in cells if r["engine"] == "qruntime-linear" and r.get("gmacs")), default=None)
    fp32 = next((r["gmacs"] for r in cells if r["engine"] == "torch-fp32" and r.get("gmacs")), None)
    int8 = max((r["gmacs"] for r in cells if r["engine"].startswith("torch-int8-") and r.get("gmacs")), default=None)
    return tuple(best / ref if best and ref else None for ref in (fp32, int8))


def geomean(xs):
    xs = [x for x in xs if x]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


def main(argv=None):
    args = parse_args(argv)
    threads = Threads()
    columns = [("qruntime", i) for i in args.isas] + [("qruntime-linear", i) for i in args.isas]
    columns += [(e, None) for e in PEERS]

    info = qruntime.cpu_info()
    print(f"host: {info['brand']} ({info['vendor']}); qruntime {qruntime.__version__} isas: "
          f"{', '.join(info['available_isas'])} (active {info['isa']}); measured: {', '.join(args.isas)}")
    try:
        torch_note = f"torch {torch().__version__}, quantized engines {torch().backends.quantized.supported_engines}"
    except Exception as e:  # the torch columns will carry the error too
        torch_note = f"torch unavailable: {type(e).__name__}: {e}"
    print(torch_note)
    print(threads.blas_note())
    print("env: " + ", ".join(f"{v}={os.environ[v]}" if v in os.environ else f"{v} unset" for v in OPENBLAS_ENV))
    print(f"GMAC/s = M*K*N / median time per call; >= {args.min_time} s of calls per cell after warm-up")
    print("qruntime = gemm_u8s8s32 (int32 out); qr-linear = ops.linear (uint8 out, requantized, like torch-int8);"
          " vs torch = best qr-linear / torch fp32, and / the faster torch-int8 engine")
    print()

    labels = [("qruntime", i) if e == "qruntime" else ("qr-linear", i) if e == "qruntime-linear"
              else PEER_LABELS[e] for e, i in columns]
    labels += [("vs torch", "fp32"), ("vs torch", "int8")]
    col = max(12, *(len(b) + 2 for _, b in labels))  # emulated ISA names are long
    print(f"{'':>16} {'':>3}" + "".join(f"{a:>{col}}" for a, _ in labels))
    print(f"{'M x K x N':>16} {'thr':>3}" + "".join(f"{b:>{col}}" for _, b in labels))

    start_busy, start_own, start_wall = cpu_busy_seconds(), sum(os.times()[:4]), time.perf_counter()
    records, errors, ratios = [], [], []
    rng = np.random.default_rng(0)
    for m, k, n in args.shapes:
        problem = Problem(m, k, n, rng)
        for nt in args.threads:
            # torch's OpenMP workers spin for a while after its last call and would take the cores
            # from qruntime's threads, which come first in the row: let them go to sleep.
            time.sleep(0.3)
            cells = []
            for engine, isa in columns:
                rec = {"engine": engine, "isa": isa, "threads": nt, "M": m, "K": k, "N": n, "gmacs": None}
                try:
                    fn = build(engine, isa, problem)
                    threads.set(nt)  # after build: torch may have just been imported
                    rec["gmacs"] = m * k * n / measure(fn, args.min_time) / 1e9
                except Exception as e:  # a failing engine is reported, never dropped
                    rec["error"] = f"{type(e).__name__}: {e}"
                cells.append(rec)
            records.extend(cells)
            row_ratios = best_linear_ratios(cells)
            ratios.append(row_ratios)

            text = []
            for rec in cells:
                if "error" in rec:
                    if rec["error"] not in errors:
                        errors.append(rec["error"])
                    text.append(f"error[{errors.index(rec['error']) + 1}]")
                else:
                    text.append(fmt(rec["gmacs"]))
            text += [f"{r:.2f}x" if r else "-" for r in row_ratios]
            print(f"{f'{m}x{k}x{n}':>16} {nt:>3}" + "".join(f"{s:>{col}}" for s in text), flush=True)

    print()
    for i, e in enumerate(errors, 1):
        print(f"error[{i}]: {e}")
    g_fp32, g_int8 = (geomean([r[j] for r in ratios]) for j in (0, 1))
    print("best qruntime path (qr-linear) over all rows, geometric mean: "
          + (f"{g_fp32:.2f}x torch fp32" if g_fp32 else "n/a vs torch fp32") + ", "
          + (f"{g_int8:.2f}x the faster torch int8 engine" if g_int8 else "n/a vs torch int8"))
    if "avx2" in args.isas:
        # The peak tool runs before the timing starts again: its own threads must not overlap ours.
        avx2_kernel_rows(args, threads, avx2_peaks(args.peak), records)

    if start_busy is not None:
        # Other busy processes wreck multi-thread figures on a 2-core host: say how much CPU they took.
        # (Our own waited-for children, the peak tool, count as ours: os.times()[2:4].)
        others = cpu_busy_seconds() - start_busy - (sum(os.times()[:4]) - start_own)
        wall = time.perf_counter() - start_wall
        print(f"other processes used ~{max(others, 0):.1f} CPU-s during the {wall:.0f} s run"
              + (" -- figures are unreliable, rerun on an idle machine" if others > 0.05 * wall else ""))

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(records, indent=1) + "\n")
    print(f"wrote {len(records)} records to {args.json}")


if __name__ == "__main__":
    sys.exit(main())
