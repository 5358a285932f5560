"""Accuracy of qruntime and the int8 peers on torchvision's architectures (random weights, real photos).

For each architecture of tests/tv_models.py (torchvision 0.28.0's model code, seeded random weights,
BatchNorm statistics from the calibration crops), built and fed exactly as tests/test_tv_models.py does
(4 x 8 calibration crops of scikit-learn's two sample photos, 4 x 8 evaluation crops, each model at its
tv_models.SIZES input size), four int8 engines quantize the model from the same calibration crops:

- qruntime: `qruntime.quantize(model, calibration)` (defaults: minmax, per-channel), as the test does;
- torch FX: PyTorch's FX post-training quantization, x86 engine (tests/test_convert.py's torch_int8);
- ORT: ONNX Runtime `quantize_static`, QDQ, per-channel int8 weights, uint8 activations, after
  `quant_pre_process` (benchmarks/model_engines.py's OrtInt8, run by its OrtFP32 session);
- OpenVINO: `nncf.quantize` of the OpenVINO model converted from the fp32 ONNX file
  (model_engines.py's OpenVINOInt8).

Each engine's output on the evaluation crops is compared with torch fp32's: SQNR (dB) and top-1
agreement (% of argmaxes over the class dim that equal fp32's; per pixel of the "out" output for the
segmentation models). Every (model, engine) cell runs in a fresh subprocess, so a peer that crashes or
hangs is reported as "fails: <reason>" rather than taking the run down; nothing is dropped.

    python benchmarks/accuracy_tv.py                          # all 15 architectures
    python benchmarks/accuracy_tv.py --models resnet18,mobilenet_v3_large --json /tmp/acc.json

Writes the records to benchmarks/results/accuracy_tv.json (after every model) and the table to the .md
beside it.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
RESULTS = HERE / "results"
CACHE = RESULTS / "cache" / "accuracy_tv"  # per-model inputs and artifacts, recreated by every run
ENGINES = ("qruntime", "torch-fx", "ort", "openvino")
TITLES = {"qruntime": "qruntime", "torch-fx": "torch FX", "ort": "ORT QDQ", "openvino": "OpenVINO+NNCF"}
PEERS = ENGINES[1:]
# Run after the others by default (slow on 2 cores); the table keeps tv_models' order.
HEAVY = ("resnet50", "googlenet", "densenet121", "convnext_tiny", "fcn_resnet50")
REASON_CHARS = 90


def _tests_on_path():
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))


def short_reason(stage, error):
    text = (str(error).strip().splitlines() or ["(no message)"])[0]
    reason = f"{stage}: {type(error).__name__}: {text}"
    return reason if len(reason) <= REASON_CHARS else reason[:REASON_CHARS - 1] + "…"


# ---- the child: one (model, engine) cell -----------------------------------------------------------

def quantize_and_run(engine, files, model, calibration, x, threads):
    """The engine's int8 output on x (numpy, the "out" output for dict models), and {stage: seconds}."""
    import numpy as np

    import model_engines
    import test_tv_models
    from test_convert import torch_int8

    times = {}
    t0 = time.perf_counter()
    if engine == "qruntime":
        import qruntime

        qruntime.set_num_threads(threads)
        q = qruntime.quantize(model, calibration, progress=False)
        times["quantize_s"] = time.perf_counter() - t0
        y = test_tv_models.main_output(q.run(x))
    elif engine == "torch-fx":
        q = torch_int8(model, calibration)
        times["quantize_s"] = time.perf_counter() - t0
        y = test_tv_models.run_torch(q, x)
    elif engine == "ort":
        artifact = model_engines.OrtInt8().prepare(files, model)
        times["quantize_s"] = time.perf_counter() - t0
        session = model_engines.OrtFP32()
        session.import_modules()
        session.load(artifact, files, len(x), threads)
        y = session.run(x)
    elif engine == "openvino":
        artifact = model_engines.OpenVINOInt8().prepare(files, model)
        times["quantize_s"] = time.perf_counter() - t0
        ov = model_engines.OpenVINOInt8()
        ov.import_modules()
        ov.load(artifact, files, len(x), threads)  # static batch len(x), files.inputs' C, H, W
        y = ov.run(x)
    else:
        raise ValueError(f"unknown engine {engine!r}")
    times["total_s"] = time.perf_counter() - t0
    return np.asarray(y), times


def onnx_export_check(files, model, x, ref, threads):
    """SQNR of ONNX Runtime fp32 on the exported ONNX file against torch fp32: the peers' starting point."""
    import model_engines
    from test_convert import sqnr_db

    path = model_engines.export_onnx_fp32(files, model)
    session = model_engines.OrtFP32()
    session.import_modules()
    session.load(path, files, len(x), threads)
    return float(sqnr_db(ref, session.run(x)))


def child_main(spec):
    """One cell in this fresh process; prints its record as one `RESULT {json}` line."""
    result, stage = {}, "import"
    try:
        _tests_on_path()
        import numpy as np
        import torch

        import model_engines
        import test_tv_models
        import tv_models
        from test_convert import sqnr_db

        torch.set_num_threads(spec["threads"])
        stage = "inputs"
        files = model_engines.ModelFiles(Path(spec["root"]), spec["model"])
        calibration = files.calibration_batches()
        x = np.load(files.inputs)
        ref = np.load(files.root / "fp32_out.npy")
        stage = "build"
        model = tv_models.build(spec["model"], bn_batches=())  # the architecture; the parent's weights and statistics:
        model.load_state_dict(torch.load(files.state_dict, weights_only=True))
        model.eval()
        if spec["engine"] == "ort":  # the exported ONNX file is shared with OpenVINO; check it first
            stage = "onnx export"
            result["onnx_fp32_sqnr_db"] = onnx_export_check(files, model, x, ref, spec["threads"])
        stage = "quantize/run"
        y, times = quantize_and_run(spec["engine"], files, model, calibration, x, spec["threads"])
        result.update(times)
        stage = "compare"
        if y.shape != ref.shape:
            raise ValueError(f"output shape {tuple(y.shape)}, fp32 {tuple(ref.shape)}")
        if not np.all(np.isfinite(y)):
            raise ValueError("non-finite output")
        result["sqnr_db"] = float(sqnr_db(ref, y))
        result["top1_agreement"] = float(test_tv_models.top1_agreement(ref, y))
    except Exception as e:  # a result, never dropped
        result["error"] = short_reason(stage, e)
    print("RESULT " + json.dumps(result), flush=True)


# ---- the parent --------------------------------------------------------------------------------------

def prepare_model(name, root):
    """Writes the cells' shared inputs for `name`: calibration and evaluation crops, weights, fp32 output."""
    import numpy as np
    import torch

    import model_engines
    import photos
    import test_tv_models
    import tv_models

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    files = model_engines.ModelFiles(root, name)
    size = tv_models.SIZES[name]
    calibration = photos.photo_batches("calibration", size, test_tv_models.CALIBRATION_BATCHES)
    x = np.concatenate(photos.photo_batches("evaluation", size, test_tv_models.EVALUATION_BATCHES))
    model = tv_models.build(name, bn_batches=calibration)
    ref = test_tv_models.run_torch(model, x)
    np.save(files.calibration, np.stack(calibration))
    np.save(files.inputs, x)
    np.save(root / "fp32_out.npy", ref)
    torch.save(model.state_dict(), files.state_dict)
    return {"size": size, "calibration_crops": sum(len(b) for b in calibration), "evaluation_crops": len(x),
            "output_shape": list(ref.shape)}


def run_cell(spec, timeout):
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s", "cell_s": time.perf_counter() - t0}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if lines:
        result = json.loads(lines[-1][len("RESULT "):])
    else:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        result = {"error": f"process died ({how}): {tail}"[:REASON_CHARS]}
    result["cell_s"] = time.perf_counter() - t0
    return result


def host_info():
    from importlib import metadata

    import qruntime

    info = {"cpu": qruntime.cpu_info(), "isa": qruntime.isa(), "python": sys.version.split()[0], "versions": {}}
    for package in ("torch", "onnxruntime", "onnx", "openvino", "nncf", "numpy"):
        try:
            info["versions"][package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info["versions"][package] = None
    return info


def fmt_sqnr(cell):
    return f"fails: {cell['error']}" if "error" in cell else f"{cell['sqnr_db']:.2f}"


def fmt_top1(cell):
    return "fails" if "error" in cell else f"{cell['top1_agreement']:.1f}"


def gap(cells):
    """qruntime's SQNR minus the best peer's (dB, negative: a peer is better), and that peer."""
    peers = [(c["sqnr_db"], e) for e, c in cells.items() if e in PEERS and "sqnr_db" in c]
    if "sqnr_db" not in cells.get("qruntime", {}) or not peers:
        return None, None
    best, engine = max(peers)
    return cells["qruntime"]["sqnr_db"] - best, engine


def table(records, engines):
    """The markdown table: SQNR vs fp32 per engine, top-1 agreement per engine, qruntime vs the best peer."""
    head = (["model", "input"] + [f"{TITLES[e]} SQNR dB" for e in engines]
            + [f"{TITLES[e]} top-1 %" for e in engines] + ["qruntime − best peer dB"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (2 * len(engines) + 1)]
    for r in records:
        cells = r["engines"]
        if "error" in r:  # the model itself could not be built or run in fp32
            row = [r["model"], "-"] + [f"fails: {r['error']}"] * len(engines) + ["-"] * (len(engines) + 1)
        else:
            g, peer = gap(cells)
            row = ([r["model"], f"{r['size']}²"] + [fmt_sqnr(cells[e]) for e in engines]
                   + [fmt_top1(cells[e]) for e in engines]
                   + ["-" if g is None else f"{g:+.2f} ({TITLES[peer]})"])
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def notes(records):
    """Lines on what stands out: ONNX export drift, and peers far ahead of qruntime."""
    out = []
    exports = [(r["engines"]["ort"]["onnx_fp32_sqnr_db"], r["model"]) for r in records
               if "onnx_fp32_sqnr_db" in r["engines"].get("ort", {})]
    if exports:
        low, model = min(exports)
        out.append(f"- ONNX Runtime fp32 on the exported ONNX file (where ORT and OpenVINO start) against torch fp32: "
                   f"lowest {low:.1f} dB ({model})")
    for r in records:
        ort = r["engines"].get("ort", {})
        if "onnx_fp32_sqnr_db" in ort and ort["onnx_fp32_sqnr_db"] < 60:
            out.append(f"- {r['model']}: the fp32 ONNX export itself is only {ort['onnx_fp32_sqnr_db']:.1f} dB from "
                       f"torch fp32 (ORT and OpenVINO start from it)")
        g, peer = gap(r["engines"])
        if g is not None and g < -1.0:
            out.append(f"- {r['model']}: {TITLES[peer]} is {-g:.2f} dB above qruntime")
    return out


def write_outputs(path, info, records, engines, wall_s):
    path.parent.mkdir(parents=True, exist_ok=True)
    order = {n: i for i, n in enumerate(info["all_models"])}
    records = sorted(records, key=lambda r: order[r["model"]])
    path.write_text(json.dumps({"host": info, "wall_s": wall_s, "records": records}, indent=1))
    md = ["# int8 accuracy on torchvision architectures (random weights, real photos)", "",
          f"Host: {info['cpu'].get('brand', '?')}, {info['cpu'].get('affinity_cpus', '?')} CPUs (qruntime ISA "
          f"{info['isa']}); {info['threads']} thread(s) per engine; "
          + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + f"; wall time {wall_s:.0f} s.", "",
          "SQNR of each engine's output against torch fp32 on the evaluation crops; top-1 % = argmax agreement "
          "with fp32 (per pixel of 'out' for lraspp/fcn).", "", table(records, engines)]
    extra = notes(records)
    if extra:
        md += ["", "Notes:"] + extra
    path.with_suffix(".md").write_text("\n".join(md) + "\n")
    return "\n".join(md)


def main(argv=None):
    _tests_on_path()
    import tv_models
    from bench_gemm import _split

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", action="append", default=[], metavar="A,B",
                   help=f"comma-separated or repeated (default: all {len(tv_models.NAMES)}, the slow ones last: "
                        f"{', '.join(HEAVY)})")
    p.add_argument("--engines", action="append", default=[], metavar="A,B",
                   help=f"comma-separated subset of {', '.join(ENGINES)} (default: all)")
    p.add_argument("--json", type=Path, default=RESULTS / "accuracy_tv.json",
                   help="records (default: benchmarks/results/accuracy_tv.json); the .md table goes beside it")
    p.add_argument("--threads", type=int, default=1,
                   help="threads per engine for inference (default 1; accuracy does not depend on it)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds before a cell is abandoned (default 3600)")
    args = p.parse_args(argv)
    models = _split(args.models)
    unknown = [m for m in models if m not in tv_models.NAMES]
    if unknown:
        p.error(f"--models: unknown {unknown}; known: {', '.join(tv_models.NAMES)}")
    if not models:
        models = [m for m in tv_models.NAMES if m not in HEAVY] + [m for m in tv_models.NAMES if m in HEAVY]
    engines = _split(args.engines) or list(ENGINES)
    if any(e not in ENGINES for e in engines):
        p.error(f"--engines: known: {', '.join(ENGINES)}")
    engines = [e for e in ENGINES if e in engines]
    if args.threads < 1:
        p.error("--threads must be >= 1")

    import torch

    torch.set_num_threads(args.threads)
    info = host_info()
    info["all_models"] = list(tv_models.NAMES)
    info["threads"] = args.threads
    start, records = time.perf_counter(), []
    for i, name in enumerate(models, 1):
        t0 = time.perf_counter()
        record = {"model": name, "engines": {}}
        root = CACHE / name
        try:
            record.update(prepare_model(name, root))
        except Exception as e:  # noqa: BLE001  a model that cannot be built is reported, not dropped
            record["error"] = short_reason("fp32", e)
        print(f"[{i}/{len(models)}] {name} ({record.get('size', '?')}²)", file=sys.stderr, flush=True)
        for engine in engines:
            if "error" in record:
                record["engines"][engine] = {"error": record["error"]}
                continue
            cell = run_cell({"model": name, "engine": engine, "root": str(root), "threads": args.threads},
                            args.timeout)
            record["engines"][engine] = cell
            what = (f"fails: {cell['error']}" if "error" in cell
                    else f"{cell['sqnr_db']:.2f} dB, top-1 {cell['top1_agreement']:.1f} %")
            print(f"    {engine:9} {what} ({cell['cell_s']:.0f} s)", file=sys.stderr, flush=True)
        record["model_s"] = time.perf_counter() - t0
        records.append(record)
        write_outputs(args.json, info, records, engines, time.perf_counter() - start)
        shutil.rmtree(root, ignore_errors=True)
    wall = time.perf_counter() - start
    print(write_outputs(args.json, info, records, engines, wall))
    print(f"\nwrote {args.json} and {args.json.with_suffix('.md')}; wall time {wall:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child_main(json.loads(sys.argv[2]))
    else:
        main()
