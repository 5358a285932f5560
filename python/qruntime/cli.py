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


def _shape(text):
    """--input-shape 1,3,224,224 -> (1, 3, 224, 224)."""
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated ints like 1,3,224,224, got {text!r}") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"must be sizes >= 1 like 1,3,224,224, got {text!r}")
    return shape


def _summary(args):
    from . import load
    print(load(args.model).summary(batch=args.batch, input_shape=args.input_shape))


def _input_for(model, batch, input_shape=None, path=None):
    if path:
        return np.load(path)
    shape = model.input_shapes(batch, input_shape)[0]
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
    x = _input_for(model, args.batch, args.input_shape, args.input)
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
        print(model.profile(x, repeat=args.repeat))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="qruntime", description="Run and inspect quantized .qnn models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="the CPU, its ISA paths and the one in use").set_defaults(fn=_info)
    shape_help = "the input's N,C,H,W (needed when the model takes any height and width)"
    p = sub.add_parser("summary", help="the op table of a model")
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--input-shape", type=_shape, help=shape_help)
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
    p.add_argument("--input-shape", type=_shape, help=shape_help)
    p.add_argument("--profile", action="store_true", help="print the per-op profile too")
    p.set_defaults(fn=_bench)
    args = parser.parse_args(argv)
    try:
        args.fn(args)
    except (ValueError, TypeError, OSError) as e:
        print(f"qruntime {args.command}: {e}", file=sys.stderr)
        return 2
    return 0
