"""The `qruntime` command: info, summary, run and bench on .qnn files; convert and compare PyTorch models.

Every subcommand takes --json (one JSON document on stdout instead of text). Bad usage (an unknown
option, a bad value, a missing file, a MODULE:FACTORY that does not give a model) exits with code 2 and
one line on stderr: `qruntime <command>: <reason>`.
"""
import argparse
import importlib
import importlib.util
import json
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

METHODS = ("minmax", "percentile", "mse", "entropy")


class _UsageError(Exception):
    """Bad usage found while parsing: main prints the message as one line and exits 2."""


class _Parser(argparse.ArgumentParser):
    """argparse without its usage dump: an error becomes one line (`<prog>: <reason>`) and exit code 2."""

    def error(self, message):
        raise _UsageError(f"{self.prog}: {message}")


def _one_line(text):
    return re.sub(r"\s*\n\s*", " ", str(text)).strip()


def _shorten(text, limit=300):
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _jsonable(value):
    """json.dumps' fallback: numpy scalars and arrays, tuples inside them."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _emit(args, doc, text):
    """The result: doc as one JSON document with --json, else text."""
    print(json.dumps(doc, default=_jsonable) if args.json else text)


# --- argument types ------------------------------------------------------------------------------

def _shape(text):
    """--input-shape 1,3,224,224 -> (1, 3, 224, 224)."""
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated ints like 1,3,224,224, got {text!r}") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"must be sizes >= 1 like 1,3,224,224, got {text!r}")
    return shape


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text!r}")
    return value


def _decibels(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a number of dB like 30, got {text!r}")
    return value


def _names(text):
    """--keep-float fc1,features.3 -> ("fc1", "features.3")."""
    names = tuple(n.strip() for n in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"must be comma-separated module paths or node names, got {text!r}")
    return names


# --- inputs: arrays and models --------------------------------------------------------------------

def _array(path, option):
    """The batch of inputs in a .npy file, or in a .npz file's array `x` (or its only array)."""
    try:
        data = np.load(path, allow_pickle=False)
    except OSError as e:
        raise ValueError(f"{option}: cannot read {path!r} ({e.strerror or e})") from None
    except ValueError as e:
        raise ValueError(f"{option}: {path!r} is not a .npy or .npz array file ({_one_line(e)})") from None
    if hasattr(data, "files"):  # .npz
        names = list(data.files)
        if "x" not in names and len(names) != 1:
            raise ValueError(f"{option}: {path!r} holds the arrays {names}; name the inputs x")
        data = data["x" if "x" in names else names[0]]
    if data.ndim < 2 or data.shape[0] == 0 or data.dtype.kind not in "biuf":
        raise ValueError(f"{option}: {path!r} holds a {data.dtype} array of shape {data.shape}; expected a batch of "
                         "numeric inputs (N, ...)")
    return data


def _batches(array, batch_size):
    return [array[i:i + batch_size] for i in range(0, len(array), batch_size)]


def _import(module_name, spec):
    """The module MODULE names: a path to a .py file, or a dotted name importable from the current directory."""
    path = Path(module_name)
    if module_name.endswith(".py") and not path.is_file():
        raise ValueError(f"{spec!r}: no file {module_name!r}")
    try:
        if module_name.endswith(".py"):
            sys.path.insert(0, str(path.resolve().parent))  # as when Python runs the file: its neighbours import
            name = f"_qruntime_factory_{path.stem}"
            loader = importlib.util.spec_from_file_location(name, path)
            module = sys.modules[name] = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
            return module
        if os.getcwd() not in sys.path and "" not in sys.path:  # the `qruntime` script's sys.path has its bin/
            sys.path.insert(0, os.getcwd())
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ValueError(f"{spec!r}: cannot import {module_name!r} ({e})") from None
    except Exception as e:  # noqa: BLE001 - the user's module failing to import is bad usage, said in one line
        raise ValueError(f"{spec!r}: importing {module_name!r} failed: {type(e).__name__}: {_one_line(e)}") from None


def _model(spec, weights):
    """The float torch model FACTORY() of MODULE:FACTORY builds, with the state_dict in `weights` loaded."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr.isidentifier():
        raise ValueError(f"{spec!r} is not MODULE:FACTORY (e.g. mypackage.models:build or path/to/models.py:build)")
    if weights is not None and not os.path.isfile(weights):
        raise ValueError(f"--weights: no file {weights!r}")
    try:
        import torch
    except ImportError:
        raise ValueError("converting and comparing PyTorch models needs torch: pip install 'qruntime[torch]'") from None
    factory = getattr(_import(module_name, spec), attr, None)
    if not callable(factory):
        raise ValueError(f"{spec!r}: {module_name!r} has no function {attr!r}")
    try:
        model = factory()
    except Exception as e:  # noqa: BLE001 - the user's factory failing is bad usage, said in one line
        raise ValueError(f"{spec!r}: {attr}() raised {type(e).__name__}: {_one_line(e)}") from None
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"{spec!r}: {attr}() returned a {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - whatever torch.load refuses, the file is the problem
            # torch wraps the reason in paragraphs about weights_only: keep the reason.
            reason = re.search(r"WeightsUnpickler error:\s*(.+?)(\n\s*\n|$)", str(e), re.S)
            reason = _one_line(reason.group(1) if reason else str(e).strip().split("\n")[0])
            raise ValueError(f"--weights: {weights!r} is not a state_dict torch.load(weights_only=True) reads "
                             f"({type(e).__name__}: {_shorten(reason)})") from None
        if not isinstance(state, dict):
            raise ValueError(f"--weights: {weights!r} holds a {type(state).__name__}, not a state_dict")
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"--weights: {weights!r} does not fit {spec!r}: {_shorten(_one_line(e))}") from None
    return model.eval()


def _progress():
    """A progress bar only for a person watching: in a pipe it would be noise on stderr."""
    return sys.stderr.isatty()


# --- subcommands ----------------------------------------------------------------------------------

def _info(args):
    from . import cpu_info
    info = cpu_info()
    _emit(args, info, json.dumps(info, indent=2, default=_jsonable))


def _summary(args):
    from . import load
    model = load(args.model)
    shapes = model.input_shapes(args.batch, args.input_shape)
    text = model.summary(batch=args.batch, input_shape=args.input_shape)
    if not args.json:
        print(text)
        return
    rows = model._op_rows(shapes)
    doc = {"model": args.model, "input_shapes": shapes, "ops": rows, "macs": sum(r["macs"] for r in rows),
           "weight_bytes": sum(r["weight_bytes"] for r in rows), "float_ops": model.float_ops()}
    _emit(args, doc, text)


def _input_for(model, batch, input_shape=None, path=None):
    if path:
        return _array(path, "--input")
    shape = model.input_shapes(batch, input_shape)[0]
    return np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)


def _run(args):
    from . import load
    model = load(args.model, threads=args.threads)
    y = model.run(_array(args.input, "input"))
    if args.output:
        np.save(args.output, y)
    if not args.json:
        if not args.output:
            print(np.array2string(np.asarray(y), threshold=200, precision=4))
        return
    arrays = list(y.values()) if isinstance(y, dict) else y if isinstance(y, list) else [y]
    outputs = []
    for spec, a in zip(model.outputs, arrays):
        outputs.append(dict(spec, shape=list(a.shape), **({} if args.output else {"values": a.tolist()})))
    _emit(args, {"model": args.model, "input": args.input, "output_file": args.output, "outputs": outputs}, "")


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
    profile = model.profile(x, repeat=args.repeat) if args.profile else None
    lines = [f"{args.model}: batch {x.shape[0]}, {get_num_threads()} thread(s), ISA path {isa()}; "
             f"load {load_ms:.1f} ms",
             f"latency median {med:.3f} ms, p90 {p90:.3f} ms; {1e3 * x.shape[0] / med:.1f} images/s"]
    if profile is not None:
        lines += ["", str(profile)]
    doc = {"model": args.model, "batch": int(x.shape[0]), "threads": get_num_threads(), "isa": isa(),
           "load_ms": load_ms, "repeat": args.repeat, "median_ms": med, "p90_ms": p90,
           "images_per_s": 1e3 * x.shape[0] / med, "profile": None if profile is None else list(profile)}
    _emit(args, doc, "\n".join(lines))


def _convert(args):
    from . import quantize
    calibration = _array(args.calib, "--calib")  # the cheap checks before torch and the model
    model = _model(args.factory, args.weights)
    qm = quantize(model, _batches(calibration, args.batch_size), method=args.method, keep_float=args.keep_float,
                  weight_bits=args.weight_bits, progress=_progress(), min_sqnr=args.min_sqnr,
                  bias_correction=args.bias_correction, cross_layer_equalization=args.cross_layer_equalization)
    qm.save(args.output)
    size = os.path.getsize(args.output)
    islands = qm.float_ops()
    doc = {"output": args.output, "bytes": size, "ops": len(qm.graph["ops"]), "method": args.method,
           "weight_bits": args.weight_bits, "calibration_images": int(len(calibration)), "float_ops": islands,
           "bias_correction": args.bias_correction, "cross_layer_equalization": args.cross_layer_equalization,
           "inputs": qm.inputs, "outputs": qm.outputs}
    text = (f"wrote {args.output}: {doc['ops']} ops, {size:,} bytes; {args.method} ranges from "
            f"{len(calibration)} images, {args.weight_bits}-bit weights"
            + (f"; float islands: {', '.join(islands)}" if islands else ""))
    _emit(args, doc, text)


def _compare(args):
    from . import compare, load
    qmodel = load(args.model)
    data = _array(args.data, "--data")
    model = _model(args.factory, args.weights)
    report = compare(model, qmodel, _batches(data, args.batch_size), sensitivity=not args.no_sensitivity)
    print(report.to_json() if args.json else report)


def _parser():
    parser = _Parser(prog="qruntime", description="Convert, inspect, run and compare quantized .qnn models.")
    sub = parser.add_subparsers(dest="command", required=True)
    json_help = "print one JSON document instead of text"

    def command(name, fn, help_text):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--json", action="store_true", help=json_help)
        p.set_defaults(fn=fn)
        return p

    command("info", _info, "the CPU, its ISA paths and the one in use")
    shape_help = "the input's N,C,H,W (needed when the model takes any height and width)"
    p = command("summary", _summary, "the op table of a model")
    p.add_argument("model")
    p.add_argument("--batch", type=_positive_int, default=1)
    p.add_argument("--input-shape", type=_shape, help=shape_help)
    p = command("run", _run, "run a model on a .npy input (float32, NCHW)")
    p.add_argument("model")
    p.add_argument("input")
    p.add_argument("-o", "--output", help="write the output to this .npy file instead of printing it")
    p.add_argument("--threads", type=_positive_int)
    p = command("bench", _bench, "latency of a model (random input unless --input), optionally per op")
    p.add_argument("model")
    p.add_argument("--batch", type=_positive_int, default=1)
    p.add_argument("--threads", type=_positive_int)
    p.add_argument("--repeat", type=_positive_int, default=50)
    p.add_argument("--input", help="a .npy input instead of random data")
    p.add_argument("--input-shape", type=_shape, help=shape_help)
    p.add_argument("--profile", action="store_true", help="print the per-op profile too")
    factory_help = "MODULE:FACTORY: FACTORY() in MODULE (a dotted module, or path/to/file.py) builds the float model"
    p = command("convert", _convert, "quantize a PyTorch model into a .qnn file (needs torch)")
    p.add_argument("factory", metavar="MODULE:FACTORY", help=factory_help)
    p.add_argument("--weights", help="a state_dict saved with torch.save, loaded with weights_only=True")
    p.add_argument("--calib", required=True, help="calibration inputs: a .npy, or a .npz with an array x")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="calibration batch size (default 32)")
    p.add_argument("--method", choices=METHODS, default="minmax", help="how activation ranges are chosen")
    p.add_argument("--keep-float", type=_names, default=(), metavar="A,B",
                   help="module paths or node names to run in float32 (float islands)")
    p.add_argument("--weight-bits", type=int, choices=(8, 7), default=8)
    p.add_argument("--min-sqnr", type=_decibels, metavar="DB",
                   help="keep the most sensitive layers in float until the output SQNR reaches DB")
    p.add_argument("--no-bias-correction", dest="bias_correction", action="store_false",
                   help="do not shift each int8 layer's bias by the mean error it makes on the calibration data")
    p.add_argument("--cross-layer-equalization", action="store_true",
                   help="balance the weight ranges of consecutive layers before quantizing")
    p.add_argument("-o", "--output", required=True, help="the .qnn file to write")
    p = command("compare", _compare, "per-layer SQNR and sensitivity of a .qnn model against its float model")
    p.add_argument("factory", metavar="MODULE:FACTORY", help=factory_help)
    p.add_argument("model", help="the .qnn file")
    p.add_argument("--data", required=True, help="inputs to measure on: a .npy, or a .npz with an array x")
    p.add_argument("--weights", help="a state_dict saved with torch.save, loaded with weights_only=True")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--no-sensitivity", action="store_true", help="skip the per-layer runs (faster)")
    return parser


def main(argv=None):
    """Runs the command; returns its exit code (0, or 2 after one line on stderr for bad usage)."""
    try:
        args, unknown = _parser().parse_known_args(argv)
        if unknown:  # said here, not by the top-level parser: the line names the command
            raise _UsageError(f"qruntime {args.command}: unrecognized arguments: {' '.join(unknown)}")
    except _UsageError as e:
        print(_one_line(e), file=sys.stderr)
        return 2
    try:
        args.fn(args)
    except (ValueError, TypeError, OSError) as e:
        print(f"qruntime {args.command}: {_one_line(e)}", file=sys.stderr)
        return 2
    return 0
