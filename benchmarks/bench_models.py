"""Model benchmarks: qruntime int8 against torch fp32/int8, ONNX Runtime fp32/int8 and OpenVINO int8, a process per cell."""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CACHE = RESULTS / "cache"                     # trained weights and prepared artifacts (git-ignored)
PEAK_TOOL = HERE.parents[1] / "shared" / "tools" / "peak"
# The last three are torchvision's own architectures (model_engines.TORCHVISION_MODELS, via tests/tv_models.py).
MODELS = ["seed_cnn", "small_resnet", "resnet18", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0",
          "shufflenet_v2_x1_0"]
DIGITS_MODELS = ("seed_cnn", "small_resnet")  # trained on the digits; the others are random-init ImageNet shapes
ENGINE_ORDER = ["torch-fp32", "torch-int8", "ort-fp32", "ort-int8", "openvino-int8", "qruntime", "qruntime-w7"]
INT8_PEERS = ("torch-int8", "ort-int8", "openvino-int8")
QRUNTIME = "qruntime"
CAP_ISAS = ["avx2"]                # --cap-isa choices
# Cells that count as capped peers under --cap-isa: verified within the cap, or with every conv/matmul kernel
# verified and the exceptions listed (model_engines.Engine.isa_report).
CAPPED = ("capped", "mostly capped")
SEED = 0
# --interleave: engines take turns in bursts of at most INTERLEAVE_BURST_RUNS timed runs or about
# INTERLEAVE_BURST_S, each after a pause, so that the previous engine's worker threads (OpenMP, ONNX Runtime's
# pool, TBB) stop spinning, and an untimed run. Bursts short against the host's drift (seconds), long against
# the cold start that follows a switch.
INTERLEAVE_GAP_S = 0.005
INTERLEAVE_BURST_S = 0.05
INTERLEAVE_BURST_RUNS = 20
# Calibration: 8 batches for every model and every int8 engine. Digits: the first 8 x 32 training images.
# 224x224 zoo models: 8 x 4 synthetic images (smooth_random_images, seed SEED); timed inputs use seed SEED + 1,
# the BatchNorm statistics (with_batchnorm_statistics) BN_IMAGES more with seed SEED + 2. torchvision models:
# 8 x 4 real photo crops (tests/photos.py's calibration split), which also set the BatchNorm statistics, as
# tests/test_tv_models.py does (synthetic fields are far from what these deeper nets see); timed inputs are
# crops of the evaluation split.
CALIBRATION_BATCHES = 8
CALIBRATION_BATCH = {"digits": 32, "imagenet": 4}
BN_IMAGES = 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TARGET_SPEEDUP_PEER = 1.3          # qruntime over the fastest peer, batch 1 and 16, 1 and 2 threads
TARGET_SEED_B1_TORCH_INT8 = 2.0    # seed CNN batch 1 over torch int8
TARGET_SEED_B256_TORCH_INT8 = 1.3  # seed CNN batch 256 over torch int8
TARGET_RSS_RATIO = 0.25            # ResNet-18 qruntime peak RSS / torch fp32's
TARGET_SIZE_RATIO = 0.26           # .qnn / fp32 state_dict file
TARGET_IMPORT_LOAD_MS = 100.0      # ResNet-18: import qruntime + load
TARGET_TORCHVISION_INT8_PEER = 1.0  # issue 15: torchvision models, batch 1, qruntime over the fastest int8 peer
# Issue 8, on an AVX2-only host (checked under --cap-isa avx2): qruntime-w7 over the fastest peer, batch 1 and 16.
TARGET_W7_AVX2 = {"seed_cnn": 1.3, "resnet18": 1.0, "mobilenet_v2": 1.3}


# ---- the child: one (engine, model, batch, threads) cell -----------------------------------------

def timed_batch(files, batch):
    """The first `batch` timed inputs of the model (repeated when it has fewer), contiguous float32."""
    import numpy as np

    x = np.ascontiguousarray(np.load(files.inputs, mmap_mode="r")[:batch])
    if len(x) < batch:
        x = np.concatenate([x] * -(-batch // len(x)))[:batch]
    return x


def child_main(spec):
    """Runs one cell in this fresh process and prints its measurements as one `RESULT {json}` line."""
    result, stage = {}, "import numpy"
    try:
        t0 = time.perf_counter()
        import numpy as np
        result["numpy_import_ms"] = (time.perf_counter() - t0) * 1e3
        import model_engines

        files = model_engines.ModelFiles(Path(spec["root"]), spec["model"])
        engine = model_engines.ENGINES[spec["engine"]]()
        batch, threads = spec["batch"], spec["threads"]
        stage = "import"
        t0 = time.perf_counter()
        engine.import_modules()
        result["import_ms"] = (time.perf_counter() - t0) * 1e3
        stage = "load"
        t0 = time.perf_counter()
        extra = engine.load(spec["artifact"], files, batch, threads)
        # Time spent re-making the torch int8 model (FX PTQ in this process) is excluded from load time.
        result["load_ms"] = (time.perf_counter() - t0) * 1e3 - extra.get("remake_ms", 0.0)
        result.update(extra)
        stage = "run"
        x = timed_batch(files, batch)
        samples, first = time_runs(engine.run, x, spec["min_time"], spec["min_runs"])
        result.update(runs=len(samples), first_run_ms=first * 1e3, median_ms=statistics.median(samples) * 1e3,
                      p90_ms=float(np.percentile(samples, 90)) * 1e3, min_ms=min(samples) * 1e3)
        result["images_per_s"] = batch / (result["median_ms"] / 1e3)
        result["rss_mb"] = peak_rss_mb()  # import + load + runs, before the accuracy pass
        np.save(spec["output"], np.asarray(engine.run(x), dtype=np.float32))
        stage = "isa report"
        result.update(engine.isa_report(spec["isa_cap"]))
        if spec["accuracy"]:
            stage = "accuracy"
            result["accuracy"] = top1(engine.run, np.load(files.labelled), batch)
    except Exception as e:  # reported in the table, never dropped
        result["error"] = f"{stage}: {type(e).__name__}: {first_line(e)}"
    print("RESULT " + json.dumps(result), flush=True)


def interleave_main(spec):
    """One column (model, batch, threads) with --interleave: every engine of spec["engines"] ({name: artifact})
    loaded in this one process, then timed in turns of short bursts, so that a change in the host's speed
    (another tenant, the clock) lands on every engine alike and the ratios between them stay fair. Prints one
    `INTERLEAVED {json}` line: per engine its median, p25 and min ms and run count, or its error."""
    results = {}
    try:
        import model_engines

        files = model_engines.ModelFiles(Path(spec["root"]), spec["model"])
        x = timed_batch(files, spec["batch"])
        engines = {}
        for name, artifact in spec["engines"].items():
            try:
                engine = model_engines.ENGINES[name]()
                engine.import_modules()
                engine.load(artifact, files, spec["batch"], spec["threads"])
                for _ in range(3):  # warm-up: lazy set-up, page faults
                    engine.run(x)
                engines[name] = engine
            except Exception as e:  # reported in that engine's record, never dropped
                results[name] = {"error": f"interleaved: {type(e).__name__}: {first_line(e)}"}
        results.update(take_turns({name: (lambda engine=engine: engine.run(x)) for name, engine in engines.items()},
                                  spec["min_runs"], spec["min_time"]))
    except Exception as e:
        results = {name: {"error": f"interleaved: {type(e).__name__}: {first_line(e)}"} for name in spec["engines"]}
    print("INTERLEAVED " + json.dumps(results), flush=True)


def take_turns(runs, min_runs, min_time):
    """Times each of `runs` ({name: a call with no arguments}) in turns of short bursts until every one has
    min_runs runs and min_time seconds per engine have passed: {name: {median_ms, p25_ms, min_ms, runs}}."""
    import numpy as np

    samples = {name: [] for name in runs}
    start = time.perf_counter()
    while runs and (min(map(len, samples.values())) < min_runs or time.perf_counter() - start < min_time * len(runs)):
        for name, run in runs.items():
            # A burst per engine: a pause (the last engine's spinning worker threads go idle), one untimed run
            # (its caches and threads warm again), then timed runs.
            time.sleep(INTERLEAVE_GAP_S)
            run()
            burst_end = time.perf_counter() + INTERLEAVE_BURST_S
            for _ in range(INTERLEAVE_BURST_RUNS):
                t0 = time.perf_counter()
                run()
                samples[name].append(time.perf_counter() - t0)
                if t0 > burst_end:
                    break
    return {name: {"median_ms": statistics.median(ts) * 1e3, "p25_ms": float(np.percentile(ts, 25)) * 1e3,
                   "min_ms": min(ts) * 1e3, "runs": len(ts)} for name, ts in samples.items()}


def peak_rss_mb():
    """This process's peak resident set size in MB.

    Linux's VmHWM, the high-water mark of this process image's memory. ru_maxrss would be wrong here:
    Linux carries it across exec, so a child started by a 600 MB parent reports at least 600 MB.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, KiB elsewhere


def first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else "(no message)"


def time_runs(run, x, min_time, min_runs):
    """Per-call seconds of run(x) after a warm-up: at least min_runs calls and min_time seconds; and the first call."""
    t0 = time.perf_counter()
    run(x)  # the first call pays lazy set-up (plans, packing, page faults)
    first = time.perf_counter() - t0
    warm_until, warm_runs = time.perf_counter() + min_time / 5, 1
    while warm_runs < 3 or time.perf_counter() < warm_until:
        run(x)
        warm_runs += 1
    samples, start = [], time.perf_counter()
    while len(samples) < min_runs or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        run(x)
        samples.append(time.perf_counter() - t0)
    return samples, first


def top1(run, labelled, batch):
    """Top-1 accuracy (%) over labelled["x"], labelled["y"], in batches of `batch` (the last one padded)."""
    import numpy as np

    x, y = labelled["x"], labelled["y"]
    correct = 0
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        padded = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        correct += int((run(np.ascontiguousarray(padded))[:len(chunk)].argmax(1) == y[i:i + batch]).sum())
    return 100.0 * correct / len(x)


# ---- the parent: prepare, run the children, report --------------------------------------------

def parse_args(argv):
    from bench_gemm import _split

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", action="append", default=[], metavar="NAME",
                   help=f"repeatable or comma-separated (default: {','.join(MODELS)})")
    p.add_argument("--engines", action="append", default=[], metavar="NAME",
                   help=f"repeatable or comma-separated (default: {','.join(ENGINE_ORDER)})")
    p.add_argument("--threads", action="append", default=[], metavar="N", help="default: 1,2")
    p.add_argument("--batches", action="append", default=[], metavar="N",
                   help="batch sizes for every model (default: 1,16, plus 256 for seed_cnn; --quick: 1, plus 256 "
                        "for seed_cnn)")
    p.add_argument("--quick", action="store_true", help="smoke run: batch 1 (seed_cnn also 256), short timings")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds of timed runs per cell after warm-up (default: 2, --quick: 0.3)")
    p.add_argument("--child-timeout", type=float, default=600, help="seconds before a cell is abandoned")
    p.add_argument("--interleave", action="store_true",
                   help="after each column's fresh-process cells, time its engines once more in one process, taking "
                        "turns in short bursts, and compare qruntime with the peers (and judge the targets) on those "
                        "medians: a host whose speed drifts by more than the gaps between engines then still gives "
                        "fair ratios")
    p.add_argument("--cap-isa", choices=CAP_ISAS, default=None,
                   help="an AVX2 proxy on a bigger CPU: restrict every engine to this ISA where the engine allows it "
                        "(qruntime QRUNTIME_ISA, OpenVINO ONEDNN_MAX_CPU_ISA, torch ATEN_CPU_CAPABILITY & co.; ONNX "
                        "Runtime cannot be capped) and record per cell what each one ran")
    p.add_argument("--json", type=Path, default=None,
                   help="output records (default: results/bench_models.json, with --cap-isa "
                        "results/bench_models_<isa>cap.json); the .md and .png go beside it")
    args = p.parse_args(argv)
    if args.json is None:  # a capped run must not overwrite the real figures
        args.json = RESULTS / (f"bench_models_{args.cap_isa}cap.json" if args.cap_isa else "bench_models.json")

    def choose(name, given, known):
        unknown = [v for v in given if v not in known]
        if unknown:
            p.error(f"--{name}: unknown {unknown}; known: {known}")
        return [v for v in known if v in given] if given else list(known)

    args.models = choose("models", _split(args.models), MODELS)
    args.engines = choose("engines", _split(args.engines), ENGINE_ORDER)
    try:
        args.threads = [int(t) for t in _split(args.threads)] or [1, 2]
        args.batches = [int(b) for b in _split(args.batches)] or None
    except ValueError as e:
        p.error(f"--threads and --batches take integers: {e}")
    if min(args.threads) < 1 or (args.batches and min(args.batches) < 1):
        p.error("--threads and --batches must be >= 1")
    if args.min_time is None:
        args.min_time = 0.3 if args.quick else 2.0
    if args.min_time <= 0:
        p.error("--min-time must be > 0")
    args.min_runs = 5 if args.quick else 10
    return args


def batches_for(model, args):
    if args.batches:
        return args.batches
    batches = [1] if args.quick else [1, 16]
    return batches + [256] if model == "seed_cnn" else batches


def host_info():
    """CPU, qruntime's ISA, library versions and the peak tool's table, for the JSON."""
    from importlib import metadata

    import qruntime

    info = {"cpu": qruntime.cpu_info(), "isa": qruntime.isa(), "python": sys.version.split()[0], "versions": {}}
    for package in ("qruntime", "torch", "onnxruntime", "openvino", "nncf", "numpy"):
        try:
            info["versions"][package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info["versions"][package] = None
    try:
        info["peak"] = subprocess.run([str(PEAK_TOOL)], capture_output=True, text=True, timeout=120,
                                      check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        info["peak"] = f"unavailable: {type(e).__name__}: {first_line(e)}"
    return info


def trained_digits_model(name, data):
    """The digits model `name` trained with SEED, its state_dict cached (safetensors) by zoo.py's hash."""
    import hashlib

    from safetensors.torch import load_file, save_file

    from qruntime import zoo

    zoo_hash = hashlib.sha256(Path(zoo.__file__).read_bytes()).hexdigest()[:16]
    path = CACHE / f"{name}-seed{SEED}-{zoo_hash}.safetensors"
    if path.exists():
        model = zoo.build(name, SEED)
        model.load_state_dict(load_file(path))
        return model.eval()
    model = zoo.train_digits(name, SEED, data)
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    save_file(model.state_dict(), partial)
    os.replace(partial, path)
    for stale in CACHE.glob(f"{name}-seed{SEED}-*.safetensors"):
        if stale != path:
            stale.unlink()
    return model


def smooth_random_images(n, chw, seed):
    """n synthetic images: smooth random fields (uniform noise on 4..32-cell grids, upsampled bilinearly and
    summed with weights 1, 1/2, 1/4, 1/8), each rescaled to [0, 1], then normalised with ImageNet's mean/std."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    c, h, w = chw
    gen = torch.Generator().manual_seed(seed)
    field = torch.zeros(n, c, h, w)
    for cells, weight in ((4, 1.0), (8, 0.5), (16, 0.25), (32, 0.125)):
        noise = torch.rand(n, c, cells, cells, generator=gen)
        field += weight * F.interpolate(noise, size=(h, w), mode="bilinear", align_corners=False)
    lo, hi = field.amin(dim=(1, 2, 3), keepdim=True), field.amax(dim=(1, 2, 3), keepdim=True)
    field = (field - lo) / (hi - lo)
    mean = torch.tensor(IMAGENET_MEAN[:c]).view(1, c, 1, 1)
    std = torch.tensor(IMAGENET_STD[:c]).view(1, c, 1, 1)
    return np.ascontiguousarray(((field - mean) / std).numpy(), dtype=np.float32)


def with_batchnorm_statistics(model, images):
    """The model (in eval mode) with every BatchNorm's running mean and variance measured on `images`.

    A randomly initialised network keeps BatchNorm's default statistics (mean 0, variance 1), which do
    not normalise anything: MobileNetV2's activations then shrink layer after layer to logits of ~1e-9,
    which torch int8 and OpenVINO round to 0. Measured statistics give every layer the unit-scale
    activations of a trained network; the weights stay the seeded random ones.
    """
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches seen
    model.train()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)  # dropout draws in train mode; keep the caller's RNG as it was
        model(torch.from_numpy(images))
    return model.eval()


def prepare_model(name, engines, max_batch):
    """Writes the model's data files and every engine's artifact; returns (files, {engine: prep record}, notes)."""
    import numpy as np

    import model_engines
    from qruntime import zoo

    files = model_engines.ModelFiles(CACHE / name, name)
    shutil.rmtree(files.root, ignore_errors=True)
    (files.root / "outputs").mkdir(parents=True)
    chw = model_engines.TORCHVISION_INPUT_CHW if name in model_engines.TORCHVISION_MODELS else zoo.MODELS[name][1]
    if name in DIGITS_MODELS:
        data = zoo.load_digits_28(SEED)
        x_train, _, x_test, y_test = data
        model = trained_digits_model(name, data)
        size = CALIBRATION_BATCH["digits"]
        calibration = x_train[:CALIBRATION_BATCHES * size].reshape(CALIBRATION_BATCHES, size, *chw)
        inputs = x_test
        np.savez(files.labelled, x=x_test, y=y_test)
        notes = f"trained on the digits (seed {SEED}), fp32 top-1 {zoo.accuracy(model, x_test, y_test):.1f} %"
    elif name in model_engines.TORCHVISION_MODELS:
        photos = model_engines.load_tests_module("photos")
        size = CALIBRATION_BATCH["imagenet"]
        calibration = np.stack(photos.photo_batches("calibration", chw[1], CALIBRATION_BATCHES, size))
        model = model_engines.load_tests_module("tv_models").build(name, bn_batches=calibration, seed=SEED)
        inputs = photos.photo_batches("evaluation", chw[1], 1, max_batch)[0]
        notes = (f"torchvision {name}, random init (seed {SEED}), BatchNorm statistics and calibration: "
                 f"{CALIBRATION_BATCHES * size} photo crops")
    else:
        model = with_batchnorm_statistics(zoo.build(name, SEED), smooth_random_images(BN_IMAGES, chw, SEED + 2))
        size = CALIBRATION_BATCH["imagenet"]
        calibration = smooth_random_images(CALIBRATION_BATCHES * size, chw, SEED).reshape(
            CALIBRATION_BATCHES, size, *chw)
        inputs = smooth_random_images(max_batch, chw, SEED + 1)
        notes = f"random init (seed {SEED}), BatchNorm statistics of {BN_IMAGES} synthetic images"
    np.save(files.calibration, np.ascontiguousarray(calibration, dtype=np.float32))
    np.save(files.inputs, np.ascontiguousarray(inputs, dtype=np.float32))

    prepared = {}
    for engine in engines:
        t0 = time.perf_counter()
        try:
            artifact = model_engines.ENGINES[engine]().prepare(files, model)
            prepared[engine] = {"artifact": str(artifact),
                                "artifact_bytes": model_engines.artifact_bytes(engine, artifact)}
        except Exception as e:  # reported in every cell of this engine, never dropped
            prepared[engine] = {"error": f"prepare: {type(e).__name__}: {first_line(e)}"}
        prepared[engine]["prepare_s"] = time.perf_counter() - t0
    return files, prepared, notes


def run_child(spec, timeout, env=None, mode="--child", tag="RESULT"):
    """Runs one cell (or with mode "--interleave-child" one interleaved column) in a fresh interpreter with `env`
    added to its environment; its `tag` record, or an error one."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), mode, json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return {"error": f"timeout: the child ran over {timeout:.0f} s", "child_s": time.perf_counter() - t0}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(tag + " ")]
    if lines:
        result = json.loads(lines[-1][len(tag) + 1:])
    else:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        result = {"error": f"child exited with code {proc.returncode}: {tail}"}
    result["child_s"] = time.perf_counter() - t0
    return result


def relative_error(output, reference):
    """||output - reference|| / ||reference|| of two saved output files, or None when either is missing."""
    import numpy as np

    try:
        y, ref = np.load(output), np.load(reference)
    except OSError:
        return None
    if y.shape != ref.shape:
        return None
    return float(np.linalg.norm(y - ref) / max(np.linalg.norm(ref), 1e-30))


def cell_label(batch, threads):
    return f"b{batch} t{threads}"


def fmt_ms(ms):
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def timing(rec, interleaved=False):
    """A record's median ms: of its own process, or with `interleaved` of its --interleave column; None if missing."""
    return rec.get("interleaved", {}).get("median_ms") if interleaved else rec.get("median_ms")


def fastest_peer(cells, capped=None, int8_only=False, interleaved=False):
    """(peer name, median ms) of the fastest engine other than qruntime among one column's records; with `capped`
    True or False, only among the peers that did or did not stay within --cap-isa; with int8_only, only INT8_PEERS;
    with interleaved, by the --interleave medians."""
    peers = [(timing(r, interleaved), r["engine"]) for r in cells if not r["engine"].startswith(QRUNTIME)
             and timing(r, interleaved) is not None
             and (capped is None or (r.get("isa_status") in CAPPED) == capped)
             and (not int8_only or r["engine"] in INT8_PEERS)]
    if not peers:
        return None, None
    ms, engine = min(peers)
    return engine, ms


def records_by(records, model):
    """{(engine, batch, threads): record} for one model."""
    return {(r["engine"], r["batch"], r["threads"]): r for r in records if r["model"] == model}


def cap_label(engine, recs, detail=True):
    """The engine's name, with its --cap-isa status(es) across `recs` (and with `detail` what ran beyond the cap, if
    short) unless every measured cell was capped."""
    statuses = sorted({r["isa_status"] for r in recs if "isa_status" in r})
    if statuses in ([], ["capped"]):
        return engine
    above = sorted({a for r in recs for a in r.get("isa_above_cap", [])})
    beyond = f": {', '.join(above)}" if detail and 0 < len(above) <= 2 else ""
    return f"{engine} ({' / '.join(statuses)}{beyond})"


def cap_banner(host, records, engines, cap):
    """The lines that open a --cap-isa report: that it is a proxy, and what each engine actually ran, per its cells."""
    import model_engines

    lines = [f"**An {cap.upper()} proxy on a bigger CPU, not an {cap.upper()}-only host.** Every cell ran on "
             f"{host['cpu']['brand']} (qruntime's own best path there: `{host['isa']}`), each engine restricted to "
             f"{cap} as far as the engine allows; what each one ran, from its cells' records:", ""]
    for engine in engines:
        recs = [r for r in records if r["engine"] == engine]
        statuses = sorted({r["isa_status"] for r in recs if "isa_status" in r}) or ["no record"]
        used = sorted({u for r in recs for u in r.get("isa_used", [])})
        above = sorted({a for r in recs for a in r.get("isa_above_cap", [])})
        env = next((r["isa_cap_env"] for r in recs if r.get("isa_cap_env")), {})
        lines.append(f"- {engine}: **{' / '.join(statuses)}**"
                     + (f" ({', '.join(f'`{k}={v}`' for k, v in env.items())})" if env else " (no cap available)")
                     + (f"; ran {', '.join(used)}" if used else "")
                     + (f"; beyond {cap}: {', '.join(above)}" if above else "")
                     + f". {model_engines.ENGINES[engine].cap_note}.")
    lines += ["", f"qruntime vs fastest capped peer counts only the {' and '.join(CAPPED)} cells of other engines; "
              "the rest are compared separately, for information only.", ""]
    return lines


def model_table(model, records, columns, engines, notes, errors, cap=None):
    """The markdown table of one model: engines x (batch, threads) median latency, then RSS, size, timings, top-1."""
    cells = records_by(records, model)
    header = ["engine"] + [f"{cell_label(b, t)} ms" for b, t in columns]
    header += ["peak RSS MB", "size MB", "import ms", "load ms", "top-1 %", "err vs fp32"]
    lines = [f"### {model} ({notes})", "", "| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]

    def error_ref(rec):
        if rec["error"] not in errors:
            errors.append(rec["error"])
        return f"error[{errors.index(rec['error']) + 1}]"

    def span(values, fmt):
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        lo, hi = min(values), max(values)
        return fmt(lo) if fmt(lo) == fmt(hi) else f"{fmt(lo)}–{fmt(hi)}"

    for engine in engines:
        recs = [cells[(engine, b, t)] for b, t in columns if (engine, b, t) in cells]
        row = [cap_label(engine, recs)]
        for b, t in columns:
            rec = cells.get((engine, b, t))
            row.append("-" if rec is None else error_ref(rec) if "error" in rec and "median_ms" not in rec
                       else fmt_ms(rec["median_ms"]))
        ok = [r for r in recs if "median_ms" in r]
        row.append(span([r.get("rss_mb") for r in ok], lambda v: f"{v:.0f}"))
        row.append(span([r.get("artifact_bytes", 0) / 1e6 if "artifact_bytes" in r else None for r in recs],
                        lambda v: f"{v:.2f}"))
        row.append(span([statistics.median([r["import_ms"] for r in ok])] if ok else [], lambda v: f"{v:.0f}"))
        row.append(span([statistics.median([r["load_ms"] for r in ok])] if ok else [], lambda v: f"{v:.0f}"))
        acc = [r for r in recs if r.get("accuracy") is not None]
        acc_errors = [r for r in recs if "error" in r and r["error"].startswith("accuracy")]
        row.append(f"{acc[0]['accuracy']:.1f}" if acc else error_ref(acc_errors[0]) if acc_errors else "-")
        row.append(span([r.get("rel_err_vs_torch_fp32") for r in ok if engine != "torch-fp32"],
                        lambda v: f"{100 * v:.1f} %"))
        lines.append("| " + " | ".join(row) + " |")

    # Under --cap-isa only capped peers make the comparison; the uncapped ones get their own row, as information.
    # Without a cap, a row against the int8 peers alone too: an fp32 peer can be the fastest, and issue 15's
    # target names the int8 ones.
    comparisons = [(True, False, "fastest capped peer"), (False, False, "fastest uncapped peer (info)")] if cap else [
        (None, False, "fastest peer"), (None, True, "fastest int8 peer")]
    # With --interleave, the same comparisons again on the interleaved medians.
    kinds = [False] + ([True] if any("interleaved" in r for r in cells.values()) else [])
    for qr_engine in [e for e in engines if e.startswith(QRUNTIME)]:
        for interleaved in kinds:
            for capped, int8_only, what in comparisons:
                row = []
                for b, t in columns:
                    column = [cells[(e, b, t)] for e in engines if (e, b, t) in cells]
                    peer, peer_ms = fastest_peer(column, capped, int8_only, interleaved)
                    qr_ms = timing(cells.get((qr_engine, b, t), {}), interleaved)
                    row.append(f"{peer_ms / qr_ms:.2f}x ({peer})" if peer and qr_ms else "-")
                if capped is not False or any(v != "-" for v in row):
                    label = f"**{qr_engine} vs {what}{', interleaved' if interleaved else ''}**"
                    lines.append("| " + " | ".join([label] + row + [""] * 6) + " |")
    return lines


def verdict(ok):
    return "n/a" if ok is None else "MET" if ok else "MISSED"


def targets(model, records, columns, cap=None):
    """The issue's targets for one model as lines 'MET/MISSED: what (numbers)', from the measured records."""
    import model_engines

    cells = records_by(records, model)
    out = []
    # With --interleave the targets are judged on the interleaved medians, and say so.
    interleaved = any("interleaved" in r for r in cells.values())
    how = " (interleaved)" if interleaved else ""

    def ratio(engine, b, t, qr_engine=QRUNTIME):
        qr_ms = timing(cells.get((qr_engine, b, t), {}), interleaved)
        ref_ms = timing(cells.get((engine, b, t), {}), interleaved)
        return ref_ms / qr_ms if qr_ms and ref_ms else None

    def cap_tag(engine, b, t):
        """Under --cap-isa, '; <engine> <status>' when that cell did not stay within the cap."""
        status = cells.get((engine, b, t), {}).get("isa_status", "not measured")
        return f"; {engine} {status}" if cap and status != "capped" else ""

    def peer_targets(qr_engine, goal, source="", batches=(1, 16), int8_only=False):
        """One line per column of `batches`: qr_engine >= goal x the fastest peer (under --cap-isa: capped peer;
        with int8_only: int8 peer)."""
        for b, t in columns:
            if b not in batches:
                continue
            column = [cells[(e, bb, tt)] for e, bb, tt in cells if (bb, tt) == (b, t)
                      and (not int8_only or e.startswith(QRUNTIME) or e in INT8_PEERS)]
            peer, _ = fastest_peer(column, True if cap else None, int8_only, interleaved)
            # A qruntime cell beyond the cap says nothing about the capped ISA.
            r = ratio(peer, b, t, qr_engine) if peer and not cap_tag(qr_engine, b, t) else None
            failed = [c["engine"] for c in column
                      if not c["engine"].startswith(QRUNTIME) and timing(c, interleaved) is None]
            out.append(f"{verdict(None if r is None else r >= goal)}: batch {b}, {t} thread(s): "
                       f"{qr_engine} >= {goal}x the fastest {'capped ' if cap else ''}{'int8 ' if int8_only else ''}"
                       f"peer{source}{how} "
                       f"({'-' if r is None else f'{r:.2f}x over {peer}'}{cap_tag(qr_engine, b, t)}"
                       + (f"; not measured: {', '.join(failed)}" if failed else "") + ")")

    if model == "seed_cnn":
        for b, goal in ((1, TARGET_SEED_B1_TORCH_INT8), (256, TARGET_SEED_B256_TORCH_INT8)):
            for t in sorted({t for bb, t in columns if bb == b}):
                r = ratio("torch-int8", b, t)
                out.append(f"{verdict(None if r is None else r >= goal)}: batch {b}, {t} thread(s): "
                           f"qruntime >= {goal}x torch int8{how} ({'-' if r is None else f'{r:.2f}x'}"
                           f"{cap_tag(QRUNTIME, b, t)}{cap_tag('torch-int8', b, t)})")
    if model in model_engines.TORCHVISION_MODELS:
        peer_targets(QRUNTIME, TARGET_TORCHVISION_INT8_PEER, " (issue 15)", batches=(1,), int8_only=True)
    else:
        peer_targets(QRUNTIME, TARGET_SPEEDUP_PEER)
    if cap and model in TARGET_W7_AVX2:
        peer_targets("qruntime-w7", TARGET_W7_AVX2[model], f" (issue 8, {cap} proxy)")

    qr_recs = [r for (e, _, _), r in cells.items() if e == QRUNTIME]
    fp32_recs = [r for (e, _, _), r in cells.items() if e == "torch-fp32"]
    size_qr = next((r["artifact_bytes"] for r in qr_recs if "artifact_bytes" in r), None)
    size_fp32 = next((r["artifact_bytes"] for r in fp32_recs if "artifact_bytes" in r), None)
    if size_qr and size_fp32:
        s = size_qr / size_fp32
        out.append(f"{verdict(s <= TARGET_SIZE_RATIO)}: .qnn <= {TARGET_SIZE_RATIO:.0%} of the fp32 state_dict file "
                   f"({size_qr / 1e6:.2f} / {size_fp32 / 1e6:.2f} MB = {s:.1%})")
    else:
        out.append(f"n/a: .qnn <= {TARGET_SIZE_RATIO:.0%} of the fp32 state_dict file (a size is missing)")
    if model == "resnet18":
        rss = [(cells[(QRUNTIME, b, t)]["rss_mb"] / cells[("torch-fp32", b, t)]["rss_mb"], b, t)
               for b, t in columns if "rss_mb" in cells.get((QRUNTIME, b, t), {})
               and "rss_mb" in cells.get(("torch-fp32", b, t), {})]
        if rss:
            worst, b, t = max(rss)
            out.append(f"{verdict(worst <= TARGET_RSS_RATIO)}: qruntime peak RSS <= 1/4 of torch fp32's in every "
                       f"cell (worst {worst:.2f} at {cell_label(b, t)})")
        else:
            out.append("n/a: qruntime peak RSS <= 1/4 of torch fp32's (a cell is missing)")
        import_load = [r["import_ms"] + r["load_ms"] for r in qr_recs if "load_ms" in r]
        if import_load:
            med = statistics.median(import_load)
            out.append(f"{verdict(med < TARGET_IMPORT_LOAD_MS)}: import qruntime + load < "
                       f"{TARGET_IMPORT_LOAD_MS:.0f} ms (median {med:.0f} ms over {len(import_load)} processes, "
                       f"max {max(import_load):.0f}; numpy already imported)")
        else:
            out.append(f"n/a: import qruntime + load < {TARGET_IMPORT_LOAD_MS:.0f} ms (no qruntime cell)")
    return out


def speedup_chart(records, models, engines, threads, path, title, names=None):
    """Bar chart: speed-up over torch fp32 at batch 1 per model and engine, one panel per thread count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(threads), figsize=(6 * len(threads), 4.5), squeeze=False, sharey=True)
    width = 0.8 / max(len(engines), 1)
    for ax, t in zip(axes[0], threads):
        for i, engine in enumerate(engines):
            heights = []
            for model in models:
                cells = records_by(records, model)
                ref, rec = cells.get(("torch-fp32", 1, t), {}), cells.get((engine, 1, t), {})
                ok = "median_ms" in ref and "median_ms" in rec
                heights.append(ref["median_ms"] / rec["median_ms"] if ok else 0)
            bars = ax.bar([m + (i - (len(engines) - 1) / 2) * width for m in range(len(models))], heights, width,
                          label=(names or {}).get(engine, engine))
            ax.bar_label(bars, labels=[f"{h:.1f}" if h else "n/a" for h in heights], fontsize=6)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(models)), models)
        ax.set_title(f"batch 1, {t} thread{'s' if t > 1 else ''}")
    axes[0][0].set_ylabel("speed-up over torch fp32 (median latency)")
    fig.suptitle(title, fontsize=10)
    handles, labels = axes[0][0].get_legend_handles_labels()
    rows = -(-len(engines) // 4) if names else 1  # engine names with their cap status need more room
    fig.legend(handles, labels, loc="lower center", ncol=-(-len(engines) // rows), fontsize=8)
    fig.tight_layout(rect=(0, 0.06 * rows, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def interleave_column(records, model, files, b, t, args):
    """--interleave: the column's engines that ran in their own processes, timed again in turns in one; each
    record gains `interleaved` (median_ms, p25_ms, min_ms, runs, or an error)."""
    import model_engines

    column = [r for r in records if (r["model"], r["batch"], r["threads"]) == (model, b, t) and "median_ms" in r]
    if len(column) < 2:
        return
    spec = {"model": model, "root": str(files.root), "batch": b, "threads": t, "min_time": args.min_time,
            "min_runs": args.min_runs, "engines": {r["engine"]: r["artifact"] for r in column}}
    env = {}
    for r in column:  # under --cap-isa every engine's own variables: they are distinct
        env.update(model_engines.ENGINES[r["engine"]]().cap_env(args.cap_isa) if args.cap_isa else {})
    timeout = args.child_timeout * len(column)
    result = run_child(spec, timeout, env, mode="--interleave-child", tag="INTERLEAVED")
    for r in column:
        r["interleaved"] = result.get(r["engine"], {"error": result.get("error", "interleaved: no record")})
    print(f"  {cell_label(b, t):>9} interleaved    " + ", ".join(
        f"{r['engine']} {fmt_ms(r['interleaved']['median_ms'])}" if "median_ms" in r["interleaved"]
        else f"{r['engine']} {r['interleaved']['error']}" for r in column), flush=True)


def compile_qruntime_sources():
    """Byte-compile the qruntime package the children import, as pip does when it installs one. Run from a
    source tree under PYTHONDONTWRITEBYTECODE (set on some hosts), every child compiled qruntime's modules
    afresh, ~70 ms counted as its import time, where the peers' installed packages load their .pyc."""
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("qruntime")
    if spec and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            compileall.compile_dir(folder, quiet=1)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        # Before parse_args, which imports bench_gemm and with it qruntime: a child imports its engine only.
        child_main(json.loads(argv[1]))
        return 0
    if argv[:1] == ["--interleave-child"]:
        interleave_main(json.loads(argv[1]))
        return 0
    args = parse_args(argv)
    compile_qruntime_sources()

    import bench_gemm
    import model_engines

    start_busy, start_own, start_wall = bench_gemm.cpu_busy_seconds(), sum(os.times()[:4]), time.perf_counter()
    host = host_info()
    print(f"host: {host['cpu']['brand']} ({host['cpu']['vendor']}), {host['cpu']['affinity_cpus']} CPUs; "
          f"qruntime isa {host['isa']}; " + ", ".join(f"{k} {v}" for k, v in host["versions"].items()))
    print(f"each cell: a fresh process, warm-up, then >= {args.min_runs} runs and >= {args.min_time} s; "
          "median ms per batch")
    if args.cap_isa:
        isa = args.cap_isa.upper()
        print(f"ISA cap {args.cap_isa}: an {isa} proxy on this CPU, not an {isa}-only host; each cell records what its "
              "engine actually ran")

    records, tables, verdicts, errors, notes_by_model, columns_by_model = [], [], {}, [], {}, {}
    for model in args.models:
        columns = [(b, t) for b in batches_for(model, args) for t in args.threads]
        columns_by_model[model] = columns
        max_batch = max(b for b, _ in columns)
        t0 = time.perf_counter()
        files, prepared, notes = prepare_model(model, args.engines, max_batch)
        notes_by_model[model] = notes
        print(f"\n{model}: {notes}; prepared in {time.perf_counter() - t0:.0f} s"
              + "".join(f"\n  {e}: {p['error']}" for e, p in prepared.items() if "error" in p))
        # Top-1 once per engine, in the cell with the largest batch and the first thread count.
        accuracy_cell = (max_batch, args.threads[0]) if model in DIGITS_MODELS else None
        for b, t in columns:  # engines innermost: one column is measured close together in time
            for engine in args.engines:
                rec = {"model": model, "engine": engine, "batch": b, "threads": t, **prepared[engine]}
                if "error" not in prepared[engine]:
                    output = files.root / "outputs" / f"{engine}-b{b}-t{t}.npy"
                    spec = {"engine": engine, "model": model, "root": str(files.root), "batch": b, "threads": t,
                            "artifact": prepared[engine]["artifact"], "output": str(output),
                            "min_time": args.min_time, "min_runs": args.min_runs,
                            "accuracy": (b, t) == accuracy_cell, "isa_cap": args.cap_isa}
                    cap_env = model_engines.ENGINES[engine]().cap_env(args.cap_isa) if args.cap_isa else {}
                    if args.cap_isa:
                        rec["isa_cap_env"] = cap_env
                    rec.update(run_child(spec, args.child_timeout, cap_env))
                    rec["rel_err_vs_torch_fp32"] = relative_error(
                        output, files.root / "outputs" / f"torch-fp32-b{b}-t{t}.npy")
                records.append(rec)
                print(f"  {cell_label(b, t):>9} {engine:<14} " + (
                    f"{fmt_ms(rec['median_ms'])} ms (p90 {fmt_ms(rec['p90_ms'])}, {rec['runs']} runs), "
                    f"RSS {rec['rss_mb']:.0f} MB, import {rec['import_ms']:.0f} ms, load {rec['load_ms']:.0f} ms"
                    + (f", top-1 {rec['accuracy']:.1f} %" if rec.get("accuracy") is not None else "")
                    + (f", {rec['error']}" if "error" in rec else "")
                    if "median_ms" in rec else rec["error"])
                    + (f" [{rec['isa_status']}: {', '.join(rec['isa_used'])}]" if "isa_status" in rec else ""),
                    flush=True)
            if args.interleave:
                interleave_column(records, model, files, b, t, args)
        tables.append(model_table(model, records, columns, args.engines, notes, errors, args.cap_isa))
        verdicts[model] = targets(model, records, columns, args.cap_isa)

    # A capped run says so before anything else, so that nobody takes it for an AVX2-only host's figures.
    banner = cap_banner(host, records, args.engines, args.cap_isa) if args.cap_isa else []
    md = ["# Model benchmarks (bench_models.py" + (f" --cap-isa {args.cap_isa}: a proxy" if args.cap_isa else "")
          + ")", "", *banner,
          f"Host: {host['cpu']['brand']}, {host['cpu']['affinity_cpus']} CPUs, qruntime ISA `{host['isa']}`"
          + (f" (capped to `{args.cap_isa}` in the cells)" if args.cap_isa else "") + ". "
          + ", ".join(f"{k} {v}" for k, v in host["versions"].items()) + ".",
          "Command: `" + " ".join(["python3 benchmarks/bench_models.py", *argv]) + "`",
          "",
          "Cells: median latency in ms per batch (bN tM: batch N, M threads), each measured in a fresh process "
          f"(>= {args.min_runs} runs and >= {args.min_time} s after warm-up; p90 in the JSON). Peak RSS: the "
          "process's VmHWM after import + load + runs (range over cells). import ms: the engine's modules, "
          "numpy already imported. load ms: artifact to a runnable model (torch-int8: the fp32 model only; "
          "re-making it by FX PTQ in the process is excluded, see remake_ms in the JSON; OpenVINO: includes "
          "compilation for the static batch). size: the artifact on disk (torch: state_dict files; torch-int8: "
          "its int8 state_dict). err vs fp32: relative L2 error of the logits against torch fp32 on the timed "
          "batch (range over cells)."
          + (" --interleave: after each column's cells, its engines timed again in one process, taking turns "
             f"in bursts (a {INTERLEAVE_GAP_S * 1e3:.0f} ms pause, one untimed run, then up to "
             f"{INTERLEAVE_BURST_RUNS} timed runs or ~{INTERLEAVE_BURST_S * 1e3:.0f} ms), for >= {args.min_time} s "
             "per engine; the rows marked interleaved and the targets use those medians (per engine in the JSON's "
             "`interleaved`)." if args.interleave else ""), ""]
    for lines in tables:
        md += lines + [""]
    for i, e in enumerate(errors, 1):
        md.append(f"- error[{i}]: {e}")
    md += ["", "## Targets", ""]
    for model, lines in verdicts.items():
        md += [f"- {model}: {line}" for line in lines]

    first = banner[:1] or [lines[0] for lines in tables[:1]]
    print("\n" + "\n".join(md[md.index(first[0]) if first else 0:]))

    wall = time.perf_counter() - start_wall
    idle_note = None
    if start_busy is not None:
        # Other busy processes wreck the figures on a 2-core host: say how much CPU they took.
        others = max(bench_gemm.cpu_busy_seconds() - start_busy - (sum(os.times()[:4]) - start_own), 0.0)
        idle_note = (f"other processes used ~{others:.0f} CPU-s during the {wall:.0f} s run"
                     + (" -- figures are unreliable, rerun on an idle machine" if others > 0.05 * wall else ""))
        print(idle_note)
    print(f"total wall time {wall:.0f} s")
    md += ["", f"Total wall time {wall:.0f} s." + (f" {idle_note[0].upper()}{idle_note[1:]}." if idle_note else "")]

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"host": host, "isa_cap": args.cap_isa, "wall_s": wall, "idle_note": idle_note,
                                     "notes": notes_by_model, "targets": verdicts, "records": records},
                                    indent=1) + "\n")
    md_path, png_path = args.json.with_suffix(".md"), args.json.with_suffix(".png")
    md_path.write_text("\n".join(md) + "\n")
    try:
        title = f"{host['cpu']['brand']}, qruntime ISA {host['isa']}"
        names = None
        if args.cap_isa:
            title = f"{args.cap_isa.upper()} proxy, not an {args.cap_isa.upper()}-only host: {host['cpu']['brand']}"
            names = {e: cap_label(e, [r for r in records if r["engine"] == e], detail=False) for e in args.engines}
        speedup_chart(records, args.models, args.engines, args.threads, png_path, title, names)
    except Exception as e:  # the chart is a convenience: the tables and JSON stand without it
        print(f"chart not written: {type(e).__name__}: {first_line(e)}")
    print(f"wrote {len(records)} records to {args.json}, tables to {md_path}, chart to {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
