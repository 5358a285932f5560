"""The `qruntime` command: info, summary, run and bench (with a per-op profile) on .qnn files."""
import argparse
import json
import statistics
import sys
import time

import numpy as np


def _info(args):
    from . import cpu_info
    print(json.dumps(cpu_info(), indent=2))


def _summary(args):
    from . import load
    print(load(args.model).summary(batch=args.batch))


def _input_for(model, batch, path=None):
    if path:
        return np.load(path)
    shape = [batch] + [d if d is not None else 224 for d in model.inputs[0]["shape"][1:]]
    return np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)


def _run(args):
    from . import load
    model = load(args.model, threads=args.threads)
    y = model.run(np.load(args.input))
    if args.output:
        np.save(args.output, y)
    else:
        print(np.array2string(np.asarray(y), threshold=200, precision=4))


def _bench(args):
    from . import get_num_threads, isa, load
    t0 = time.perf_counter()
    model = load(args.model, threads=args.threads)
    load_ms = 1e3 * (time.perf_counter() - t0)
    x = _input_for(model, args.batch, args.input)
    model.run(x)
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        model.run(x)
        times.append(time.perf_counter() - t)
    times.sort()
    med, p90 = 1e3 * statistics.median(times), 1e3 * times[min(len(times) - 1, int(0.9 * len(times)))]
    print(f"{args.model}: batch {x.shape[0]}, {get_num_threads()} thread(s), ISA path {isa()}; load {load_ms:.1f} ms")
    print(f"latency median {med:.3f} ms, p90 {p90:.3f} ms; {1e3 * x.shape[0] / med:.1f} images/s")
    if args.profile:
        print()
        print(format_profile(model.profile(x, repeat=args.repeat)))


def format_profile(rows):
    """The per-op profile as a table: op, name, output shape, time, share, GMAC/s or GB/s, ISA path."""
    head = f"{'op':<20} {'name':<28} {'output shape':<20} {'ms':>9} {'share':>7} {'rate':>14}  kernel"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["macs"]:
            rate = f"{r['gmacs']:8.1f} GMAC/s"
        else:
            nbytes = int(np.prod(r["shape"])) * (1 if r["scale"] is not None else 4)
            rate = f"{nbytes / (r['ms'] * 1e6):8.2f} GB/s" if r["ms"] > 0 else ""
        lines.append(f"{r['op']:<20} {r['name'][:28]:<28} {str(r['shape']):<20} {r['ms']:9.4f} {r['share']:7.1%} "
                     f"{rate:>14}  {r['kernel']}")
    total = sum(r["ms"] for r in rows)
    lines.append("-" * len(head))
    lines.append(f"total {total:.3f} ms over {len(rows)} ops (GB/s counts output bytes)")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="qruntime", description="Run and inspect quantized .qnn models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="the CPU, its ISA paths and the one in use").set_defaults(fn=_info)
    p = sub.add_parser("summary", help="the op table of a model")
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=1)
    p.set_defaults(fn=_summary)
    p = sub.add_parser("run", help="run a model on a .npy input (float32, NCHW)")
    p.add_argument("model")
    p.add_argument("input")
    p.add_argument("-o", "--output", help="write the output to this .npy file instead of printing it")
    p.add_argument("--threads", type=int)
    p.set_defaults(fn=_run)
    p = sub.add_parser("bench", help="latency of a model (random input unless --input), optionally per op")
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int)
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--input", help="a .npy input instead of random data")
    p.add_argument("--profile", action="store_true", help="print the per-op profile too")
    p.set_defaults(fn=_bench)
    args = parser.parse_args(argv)
    try:
        args.fn(args)
    except (ValueError, TypeError, OSError) as e:
        print(f"qruntime {args.command}: {e}", file=sys.stderr)
        return 2
    return 0
