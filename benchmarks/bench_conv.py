"""Per-layer conv time of ResNet-18 and MobileNetV2 (batch 1, 224x224): each qruntime ISA path beside torch int8 and fp32."""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

import qruntime
import qruntime.ops

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from bench_gemm import (  # noqa: E402  (needs the path above)
    Threads,
    _split,
    cpu_busy_seconds,
    measure,
    parse_threads_and_isas,
    torch,
)

SHAPES_DIR = BENCH_DIR / "shapes"
DEFAULT_JSON = BENCH_DIR / "results" / "bench_conv.json"
MODELS = {"resnet18": "ResNet-18", "mobilenetv2": "MobileNetV2"}
# The targets: best qruntime path's network total vs the faster torch int8 engine's (speed-up).
TARGETS = {
    "resnet18": (1.0, "ResNet-18: best path at least as fast as the faster torch int8 engine"),
    "mobilenetv2": (1.5, "MobileNetV2: >= 1.5x faster than torch int8"),
}
PEERS = ["torch-int8-x86", "torch-int8-onednn", "torch-fp32"]
PEER_LABELS = {
    "torch-int8-x86": ("torch-int8", "x86"),
    "torch-int8-onednn": ("torch-int8", "onednn"),
    "torch-fp32": ("torch", "fp32"),
}
KINDS = ["first layer", "1x1", "kxk", "depthwise", "grouped"]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", action="append", default=[], metavar="NAME",
                   help=f"repeatable or comma-separated, from {', '.join(MODELS)} (default: both)")
    p.add_argument("--threads", action="append", default=[], metavar="N",
                   help="thread counts; repeatable or comma-separated (default: 1,2)")
    p.add_argument("--isas", action="append", default=[], metavar="ISA",
                   help="qruntime ISA paths; repeatable or comma-separated "
                        "(default: qruntime.available_isas(), which leaves out the test-only emulated paths)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"output records (default: {DEFAULT_JSON})")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds of timed calls per layer and engine (default: 0.1, or 0.02 with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke run: fewer samples (min-time 0.02 s)")
    args = p.parse_args(argv)

    args.models = _split(args.models) or list(MODELS)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"--models {unknown} unknown; known: {list(MODELS)}")
    parse_threads_and_isas(p, args)
    if args.min_time is None:
        args.min_time = 0.02 if args.quick else 0.1
    if args.min_time <= 0:
        p.error("--min-time must be > 0")
    return args


class Layer:
    """One line of a shapes file: a conv at batch 1, NCHW, square kernel, occurring `count` times in the network."""

    def __init__(self, line, first):
        name, *nums = line.split()
        if len(nums) != 9:
            raise ValueError(f"expected 10 fields, got {line!r}")
        self.name = name
        (self.in_ch, self.height, self.width, self.out_ch, self.kernel,
         self.stride, self.padding, self.groups, self.count) = map(int, nums)
        self.out_h = (self.height + 2 * self.padding - self.kernel) // self.stride + 1
        self.out_w = (self.width + 2 * self.padding - self.kernel) // self.stride + 1
        self.k = self.in_ch // self.groups * self.kernel * self.kernel  # reduction length per output
        self.macs = self.out_ch * self.out_h * self.out_w * self.k
        if first:
            self.kind = "first layer"
        elif self.groups > 1:
            self.kind = "depthwise" if self.groups == self.in_ch == self.out_ch else "grouped"
        else:
            self.kind = "1x1" if self.kernel == 1 else "kxk"

    def bytes_moved(self, elem_size):
        """Input + output + weights of one call; a lower bound on the memory traffic of a depthwise conv."""
        elems = self.in_ch * self.height * self.width + self.out_ch * self.out_h * self.out_w
        return (elems + self.out_ch * self.k) * elem_size


def load_layers(model):
    lines = (SHAPES_DIR / f"{model}_conv.txt").read_text().splitlines()
    lines = [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]
    return [Layer(line, i == 0) for i, line in enumerate(lines)]


class Problem:
    """One layer's operands: the same quantized integers feed qruntime and torch int8; torch fp32 gets them dequantized."""

    def __init__(self, layer, rng):
        L = layer
        self.layer = L
        self.x_q = rng.integers(0, 256, (1, L.in_ch, L.height, L.width), dtype=np.uint8)
        self.w_q = rng.integers(-127, 128, (L.out_ch, L.in_ch // L.groups, L.kernel, L.kernel), dtype=np.int8)
        self.x_scale, self.x_zp = 0.02, 128
        self.w_scale = (rng.uniform(0.5, 1.5, L.out_ch) / (127 * math.sqrt(L.k))).astype(np.float32)
        self.bias = rng.normal(0.0, 0.1, L.out_ch).astype(np.float32)
        self.x_f = ((self.x_q.astype(np.float32) - self.x_zp) * self.x_scale).astype(np.float32)
        self.w_f = self.w_q.astype(np.float32) * self.w_scale[:, None, None, None]
        # Output quantization from a float reference at a few output positions, so requantization neither
        # clips nor collapses everything (either would be an unrealistic workload).
        y = self._reference(rng, 64)
        lo, hi = min(float(y.min()), 0.0), max(float(y.max()), 0.0)
        self.out_scale = max(hi - lo, 1e-6) / 255
        self.out_zp = int(np.clip(round(-lo / self.out_scale), 0, 255))

    def _reference(self, rng, n):
        """Float conv outputs (all channels) at n random output positions."""
        L, p, s, k = self.layer, self.layer.padding, self.layer.stride, self.layer.kernel
        xp = np.pad(self.x_f[0], ((0, 0), (p, p), (p, p)))  # zero is the dequantized zero point
        pos = rng.integers(0, [L.out_h, L.out_w], (n, 2))
        patches = np.stack([xp[:, i * s:i * s + k, j * s:j * s + k] for i, j in pos])
        patches = patches.reshape(n, L.groups, L.k)
        w = self.w_f.reshape(L.groups, L.out_ch // L.groups, L.k)
        return np.einsum("pgk,gok->pgo", patches, w).reshape(n, L.out_ch) + self.bias


def build(engine, isa, p):
    """A zero-argument call to time; weights are prepacked here, outside the timed loop."""
    L = p.layer
    # Every engine gets its input in channels-last memory, as inside a network where each layer
    # receives its predecessor's output; an NCHW-contiguous input would time a layout conversion.
    if engine == "qruntime":
        # Packed for the layer's geometry, as a model's conv node packs (the packer may choose Winograd).
        packed = qruntime.ops.pack_conv2d(p.w_q, L.groups, isa=isa, stride=L.stride, dilation=1)
        x_cl = np.ascontiguousarray(p.x_q.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        args = (x_cl, p.x_scale, p.x_zp, packed, p.w_scale, p.bias, p.out_scale, p.out_zp)
        conv2d = qruntime.ops.conv2d
        return lambda: conv2d(*args, stride=L.stride, padding=L.padding, groups=L.groups)
    t = torch()
    if engine == "torch-fp32":
        x, w, b = t.from_numpy(p.x_f), t.from_numpy(p.w_f), t.from_numpy(p.bias)
        x = x.contiguous(memory_format=t.channels_last)
        conv2d = t.nn.functional.conv2d
        return lambda: conv2d(x, w, b, L.stride, L.padding, 1, L.groups)
    if engine.startswith("torch-int8-"):
        # The engine must be current both when packing and when calling; it stays set while this is timed.
        t.backends.quantized.engine = engine.removeprefix("torch-int8-")
        scales = t.from_numpy(p.w_scale.astype(np.float64))
        w_q = t.quantize_per_channel(t.from_numpy(p.w_f), scales, t.zeros(L.out_ch, dtype=t.long), 0, t.qint8)
        x_q = t.quantize_per_tensor(t.from_numpy(p.x_f), p.x_scale, p.x_zp, t.quint8)
        # Requantizing the float copies must give back qruntime's integers, or the engines run different work.
        if not (np.array_equal(w_q.int_repr().numpy(), p.w_q) and np.array_equal(x_q.int_repr().numpy(), p.x_q)):
            raise RuntimeError("torch quantized operands differ from qruntime's integers")
        x_q = x_q.contiguous(memory_format=t.channels_last)
        s, pad = [L.stride] * 2, [L.padding] * 2
        packed = t.ops.quantized.conv2d_prepack(w_q, t.from_numpy(p.bias), s, pad, [1, 1], L.groups)
        conv2d, out_scale, out_zp = t.ops.quantized.conv2d, p.out_scale, p.out_zp
        return lambda: conv2d(x_q, packed, out_scale, out_zp)
    raise ValueError(f"unknown engine {engine!r}")


def fmt_ms(ms):
    return f"{ms:.3f}" if ms < 10 else f"{ms:.2f}" if ms < 100 else f"{ms:.1f}"


def fmt_ratio(r):
    return f"{r:.2f}x" if r else "-"


def speedup(ref_ms, ms):
    return ref_ms / ms if ref_ms and ms else None


def total_ms(rows, column):
    """Network time of one column: each layer's time x its count; None if any layer failed."""
    if any(recs[column]["ms"] is None for _, recs in rows):
        return None
    return sum(recs[column]["ms"] * layer.count for layer, recs in rows)


def fastest(rows, columns):
    """(column, total ms) of the column with the smallest total among those that completed, or (None, None)."""
    done = [(c, total_ms(rows, c)) for c in columns]
    return min(((c, ms) for c, ms in done if ms is not None), key=lambda cm: cm[1], default=(None, None))


def engine_label(column):
    engine, isa = column
    return f"qruntime {isa}" if engine == "qruntime" else " ".join(PEER_LABELS[engine])


class BusyMeter:
    """How much CPU other processes took since start: on a 2-core host any of it spoils the 2-thread figures."""

    def __init__(self):
        self.busy, self.own, self.wall = cpu_busy_seconds(), sum(os.times()[:2]), time.perf_counter()

    def read(self, what):
        """(report line, whether other processes took enough CPU to make the figures unreliable)."""
        wall = time.perf_counter() - self.wall
        if self.busy is None:
            return f"{what} took {wall:.0f} s (other processes' CPU use unknown)", False
        others = cpu_busy_seconds() - self.busy - (sum(os.times()[:2]) - self.own)
        busy = others > 0.05 * wall
        return (f"other processes used ~{max(others, 0):.1f} CPU-s during the {wall:.0f} s {what}"
                + (" -- figures are unreliable, rerun on an idle machine" if busy else "")), busy


def verdict_line(text, ratio, goal, busy):
    verdict = "n/a" if ratio is None else "MET" if ratio >= goal else "MISSED"
    return (f"{text}: {verdict} ({fmt_ratio(ratio)}, needs >= {goal:.2f}x)"
            + (" -- unreliable: other processes were busy" if busy else ""))


def run_table(model, layers, nt, columns, args, threads, errors):
    """Measures and prints one (model, threads) table; returns its records and its target verdict."""
    rng = np.random.default_rng(0)  # the same operands at every thread count
    qr_cols = [c for c in columns if c[0] == "qruntime"]
    int8_cols = [c for c in columns if c[0].startswith("torch-int8-")]
    fp32_cols = [c for c in columns if c[0] == "torch-fp32"]
    labels = [("qruntime", i) if e == "qruntime" else PEER_LABELS[e] for e, i in columns] + [("vs torch", "int8")]
    col = max(10, *(len(b) + 2 for _, b in labels))  # emulated ISA names are long
    name_w = max(len("TOTAL"), *(len(layer.name) for layer in layers))

    print(f"== {MODELS[model]}, {nt} thread{'s' if nt > 1 else ''}: ms per call (median); "
          "n = occurrences in the network; vs torch int8 = faster torch int8 / best qruntime path (>1: qruntime faster)")
    print(f"{'':<{name_w}} {'':>3}" + "".join(f"{a:>{col}}" for a, _ in labels))
    print(f"{'layer':<{name_w}} {'n':>3}" + "".join(f"{b:>{col}}" for _, b in labels))
    meter = BusyMeter()
    problems = [Problem(layer, rng) for layer in layers]
    measured = {layer.name: {} for layer in layers}
    records = []
    # Engine by engine, not layer by layer: torch's OpenMP workers spin for a while after each call
    # and would take the cores from the next engine's threads. The pause lets any spinner from
    # before this table go to sleep.
    time.sleep(0.5)
    for engine, isa in columns:
        for layer, problem in zip(layers, problems):
            rec = {"model": model, "layer": layer.name, "engine": engine, "isa": isa, "threads": nt,
                   "ms": None, "gmacs": None, "gbs": None, "count": layer.count}
            try:
                fn = build(engine, isa, problem)
                threads.set(nt)  # after build: torch may have just been imported
                sec = measure(fn, args.min_time)
                rec["ms"] = sec * 1e3
                rec["gmacs"] = layer.macs / sec / 1e9
                if layer.kind == "depthwise":
                    rec["gbs"] = layer.bytes_moved(4 if engine == "torch-fp32" else 1) / sec / 1e9
            except Exception as e:  # a failing engine is reported, never dropped
                rec["error"] = f"{type(e).__name__}: {e}"
                if rec["error"] not in errors:
                    errors.append(rec["error"])
            measured[layer.name][(engine, isa)] = rec
            records.append(rec)

    rows = []
    for layer in layers:
        recs = measured[layer.name]
        rows.append((layer, recs))

        cells = [fmt_ms(r["ms"]) if r["ms"] is not None else f"error[{errors.index(r['error']) + 1}]"
                 for r in recs.values()]
        best_qr = min((recs[c]["ms"] for c in qr_cols if recs[c]["ms"] is not None), default=None)
        best_int8 = min((recs[c]["ms"] for c in int8_cols if recs[c]["ms"] is not None), default=None)
        cells.append(fmt_ratio(speedup(best_int8, best_qr)))
        print(f"{layer.name:<{name_w}} {layer.count:>3}" + "".join(f"{s:>{col}}" for s in cells), flush=True)

    totals = {c: total_ms(rows, c) for c in columns}
    for (engine, isa), ms in totals.items():
        rec = {"model": model, "layer": "TOTAL", "engine": engine, "isa": isa, "threads": nt, "ms": ms}
        if ms is None:
            failed = sum(recs[(engine, isa)]["ms"] is None for _, recs in rows)
            rec["error"] = f"{failed} of {len(rows)} layers failed"
        records.append(rec)
    qr, qr_ms = fastest(rows, qr_cols)
    int8, int8_ms = fastest(rows, int8_cols)
    _, fp32_ms = fastest(rows, fp32_cols)
    cells = [fmt_ms(ms) if ms is not None else "-" for ms in totals.values()]
    cells.append(fmt_ratio(speedup(int8_ms, qr_ms)))
    calls = sum(layer.count for layer in layers)
    print(f"{'TOTAL':<{name_w}} {calls:>3}" + "".join(f"{s:>{col}}" for s in cells))

    print("network totals (ms summed with counts; >1: qruntime faster):")
    if qr is None:
        print("  no qruntime path completed every layer")
    else:
        print(f"  best qruntime path ({qr[1]}, {fmt_ms(qr_ms)} ms) vs the faster torch int8 engine "
              + (f"({engine_label(int8)}, {fmt_ms(int8_ms)} ms): {fmt_ratio(speedup(int8_ms, qr_ms))}"
                 if int8 else "(none completed): -"))
        print("  best qruntime path vs torch fp32"
              + (f" ({fmt_ms(fp32_ms)} ms): {fmt_ratio(speedup(fp32_ms, qr_ms))}" if fp32_ms else " (failed): -"))
    # A busy neighbour can slow one engine far more than another (seen: torch int8 at 2 threads taking
    # ~24 ms for a 0.6 ms layer while a core was taken), so a verdict on such figures says so.
    busy_line, busy = meter.read("table")
    goal, text = TARGETS[model]
    verdict = verdict_line(text, speedup(int8_ms, qr_ms), goal, busy)
    print(f"  target {verdict}")

    # Per layer type, each side's fastest engine over that type's layers, so a lagging kernel type stands out.
    kinds = [k for k in KINDS if any(layer.kind == k for layer in layers)]
    print("per layer type: faster torch int8 engine / each qruntime path, ms summed with counts (>1: qruntime faster)")
    kind_w = max(len(k) for k in kinds)
    print(f"  {'type':<{kind_w}} {'calls':>5} {'torch int8 ms':>20}" + "".join(f"{i:>{col}}" for _, i in qr_cols))
    for kind in kinds:
        sub = [(layer, recs) for layer, recs in rows if layer.kind == kind]
        ref, ref_ms = fastest(sub, int8_cols)
        ref_text = f"{fmt_ms(ref_ms)} ({ref[0].removeprefix('torch-int8-')})" if ref else "-"
        ratios = [fmt_ratio(speedup(ref_ms, total_ms(sub, c))) for c in qr_cols]
        print(f"  {kind:<{kind_w}} {sum(layer.count for layer, _ in sub):>5} {ref_text:>20}"
              + "".join(f"{s:>{col}}" for s in ratios))
        if kind == "depthwise":
            # Depthwise convs are memory bound: GB/s says how close each engine gets to the bandwidth.
            moved = {c: sum(layer.bytes_moved(4 if c[0] == "torch-fp32" else 1) * layer.count for layer, _ in sub)
                     for c in columns}
            gbs = [f"{engine_label(c)} {moved[c] / total_ms(sub, c) / 1e6:.1f}" for c in columns
                   if total_ms(sub, c)]
            print(f"  {'':<{kind_w}} GB/s (input + output + weights per call / time): {', '.join(gbs)}")
    print(busy_line)
    print(flush=True)
    return records, (nt, verdict)


def main(argv=None):
    args = parse_args(argv)
    threads = Threads()
    columns = [("qruntime", i) for i in args.isas] + [(e, None) for e in PEERS]

    info = qruntime.cpu_info()
    print(f"host: {info['brand']} ({info['vendor']}); qruntime {qruntime.__version__} isas: "
          f"{', '.join(info['available_isas'])} (active {info['isa']}); measured: {', '.join(args.isas)}")
    try:
        print(f"torch {torch().__version__}, quantized engines {torch().backends.quantized.supported_engines}")
    except Exception as e:  # the torch columns will carry the error too
        print(f"torch unavailable: {type(e).__name__}: {e}")
    print(f"batch 1, 224x224; >= {args.min_time} s of calls per cell after warm-up; weights prepacked outside "
          "the timed loop; qruntime and torch int8 take the same uint8 activations and per-channel int8 weights")
    print()

    meter = BusyMeter()
    records, errors, verdicts = [], [], []
    for model in args.models:
        layers = load_layers(model)
        for nt in args.threads:
            recs, verdict = run_table(model, layers, nt, columns, args, threads, errors)
            records.extend(recs)
            verdicts.append(verdict)
            # Written after every table, so an interrupted run keeps what it measured.
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(records, indent=1) + "\n")

    for i, e in enumerate(errors, 1):
        print(f"error[{i}]: {e}")
    print("targets (best qruntime path's network total vs the faster torch int8 engine's):")
    for nt, verdict in verdicts:
        print(f"  {nt} thread{'s' if nt > 1 else ' '}  {verdict}")
    print(meter.read("run")[0])
    print(f"wrote {len(records)} records to {args.json}")


if __name__ == "__main__":
    sys.exit(main())
