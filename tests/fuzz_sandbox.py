"""Runs fuzz cases in persistent worker processes under a memory and a time limit: a worker that dies is a
"crash" verdict, one past the time limit a "hang", and either is replaced by a fresh worker.

run_campaign(seed, indices, ...) evaluates fuzz_qnn cases on `jobs` workers, saves every failure (its
.qnn bytes, inputs and a one-line description) to an output directory, and returns the verdicts in index
order; summary(verdicts) is the table of outcomes and failures.
"""
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

import fuzz_qnn

OUTCOMES = ("ran_equal", "rejected", "memory_error", "skipped", "mismatch", "other_exception", "crash", "hang",
            "harness_error")
FAILURES = ("mismatch", "other_exception", "crash", "hang", "harness_error")
START_TIMEOUT = 120.0  # a worker imports numpy and qruntime before its first case


def _worker_main(conn_in, conn_out, memory_limit, threads):
    """A worker: limits set, then (seed, index, debug) jobs in, stage names and verdicts out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the campaign, not the case in flight
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # crashes are expected: no core files
    fuzz_qnn.prepare_worker(threads)
    if memory_limit:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    conn_out.send(("ready", os.getpid()))
    stage = lambda name: conn_out.send(("stage", name))  # noqa: E731
    while True:
        job = conn_in.recv()
        if job is None:
            return
        seed, index, debug, reference_budget = job
        try:
            verdict = fuzz_qnn.run_case(seed, index, stage, debug, reference_budget)
        except Exception as e:  # noqa: BLE001 - a bug of the fuzzer itself, reported as such
            verdict = _verdict("harness_error", "fuzzer", f"{type(e).__name__}: {e}")
        conn_out.send(("done", verdict))


class Worker:
    """One worker process (this file run as a script) and the pipes to it; run() survives its death and hangs."""

    def __init__(self, memory_limit, threads=1):
        self.memory_limit, self.threads = memory_limit, threads
        self._start()

    def _start(self):
        from_parent, to_child = os.pipe()
        from_child, to_parent = os.pipe()
        args = [sys.executable, __file__, "--worker", str(from_parent), str(to_parent), str(self.memory_limit),
                str(self.threads)]
        self.proc = subprocess.Popen(args, pass_fds=(from_parent, to_parent), stdin=subprocess.DEVNULL)
        os.close(from_parent)
        os.close(to_parent)
        self.conn_out = Connection(to_child, readable=False)
        self.conn_in = Connection(from_child, writable=False)
        if not self.conn_in.poll(START_TIMEOUT):
            raise RuntimeError(f"fuzz worker did not start within {START_TIMEOUT} s")
        kind, _ = self.conn_in.recv()
        assert kind == "ready"

    def _stop(self):
        if self.proc.poll() is None:
            self.proc.kill()  # SIGKILL to our own child, by its handle
        code = self.proc.wait()
        self.conn_in.close()
        self.conn_out.close()
        return code

    def _restart(self, outcome, stage, time_limit):
        """The verdict on the worker that died or stalled, and a fresh worker in its place."""
        code = self._stop()
        self._start()
        if outcome == "hang":
            return _verdict("hang", stage, f"time limit {time_limit:g} s")
        return _verdict("crash", stage, f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}")

    def run(self, seed, index, time_limit, debug=None):
        """The verdict of case (seed, index); "crash" / "hang" (and a new worker) if it kills or stalls this one.
        The reference gets a tenth of the time limit (fuzz_qnn.evaluate: "skipped" past it)."""
        deadline, stage = time.monotonic() + time_limit, "queued"
        try:
            self.conn_out.send((seed, index, debug, time_limit / 10))
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.conn_in.poll(remaining):
                    return self._restart("hang", stage, time_limit)
                kind, payload = self.conn_in.recv()
                if kind == "done":
                    return payload
                stage = payload
        except (EOFError, OSError):  # the pipe broke: the worker is gone
            return self._restart("crash", stage, time_limit)

    def close(self):
        try:
            self.conn_out.send(None)
            self.proc.wait(5)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        self._stop()


def _verdict(outcome, stage, error):
    """A verdict the sandbox gives itself (the worker could not)."""
    return {"outcome": outcome, "stage": stage, "error": error, "detail": "", "desc": "", "isa": None,
            "inputs": None}


def _regenerate(verdict):
    """The verdict's case and, if its graph parsed in the worker, its (inputs, isa): what the parent needs to
    save a failure or describe a case whose worker died (reading it again here is safe: it parsed there)."""
    case = fuzz_qnn.make_case(verdict["seed"], verdict["index"], mutate=verdict.get("debug") is None)
    if verdict["stage"] in ("queued", "generate", "read"):
        return case, None, None
    graph, _ = fuzz_qnn.qnn.from_bytes(case.data)
    xs, isa = fuzz_qnn.case_inputs(case, graph)
    return case, xs, isa


def save_failure(out_dir, verdict):
    """Writes the failing case's .qnn (and its inputs, when its graph parses) and a line of failures.tsv."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    case, xs, _ = _regenerate(verdict)
    stem = f"{verdict['outcome']}-s{case.seed}-i{case.index}"
    (out / f"{stem}.qnn").write_bytes(case.data)
    if xs is not None:
        np.savez(out / f"{stem}-inputs.npz", *xs)
    fields = [str(case.seed), str(case.index), verdict["outcome"], verdict["stage"], str(verdict.get("isa")),
              str(verdict.get("inputs")), verdict["error"], verdict["detail"], case.desc]
    with open(out / "failures.tsv", "a", encoding="utf-8") as f:
        f.write("\t".join(x.replace("\t", " ").replace("\n", " ") for x in fields) + "\n")


def run_campaign(seed, indices, jobs=2, time_limit=10.0, memory_limit=3 << 30, out_dir=None, progress=None,
                 debug=None):
    """Verdicts (dicts with seed and index added) of cases (seed, i) for i in indices, in index order.
    debug: {index: action} faults for the harness's own test (fuzz_qnn._debug)."""
    queue, verdicts, lock, errors = iter(indices), {}, threading.Lock(), []
    debug = debug or {}

    def slot():
        worker = None
        try:
            worker = Worker(memory_limit)
            while not errors:
                with lock:
                    index = next(queue, None)
                if index is None:
                    return
                began = time.monotonic()
                verdict = worker.run(seed, index, time_limit, debug.get(index))
                verdict["seconds"] = time.monotonic() - began
                verdict.update(seed=seed, index=index, debug=debug.get(index))
                if not verdict["desc"] and verdict["outcome"] != "harness_error":  # the worker died first
                    case, xs, isa = _regenerate(verdict)
                    verdict.update(desc=case.desc, isa=isa, inputs=xs and [x.shape for x in xs])
                with lock:
                    verdicts[index] = verdict
                    if out_dir and verdict["outcome"] in FAILURES and verdict["outcome"] != "harness_error":
                        save_failure(out_dir, verdict)
                    if progress:
                        progress(verdict, verdicts)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            errors.append(e)
        finally:
            if worker:
                worker.close()

    threads = [threading.Thread(target=slot, daemon=True) for _ in range(max(1, jobs))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        errors.append(KeyboardInterrupt())
        raise
    if errors:
        raise errors[0]
    return [verdicts[i] for i in sorted(verdicts)]


def signature(verdict):
    """What two verdicts of one root cause share: outcome, stage, and the error / detail with its numbers,
    quoted names and shapes blanked out."""
    text = verdict["error"] or verdict["detail"]
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    text = re.sub(r"\(\d[\d, ]*\)|\[[-\d, ]*\]|-?\d+(\.\d+)?(e[-+]?\d+)?", "N", text)
    return f"{verdict['outcome']} @{verdict['stage']}: {text[:90]}"


def counts(verdicts):
    return Counter(v["outcome"] for v in verdicts)


def summary(verdicts, wall=None, top=12):
    """The outcome table, every failure signature with its count and first example, the commonest rejections."""
    c, n = counts(verdicts), len(verdicts)
    lines = [f"{n} cases" + (f" in {wall:.0f} s ({n / wall:.0f} cases/s)" if wall else ""),
             f"{'outcome':<16} {'cases':>8} {'share':>7}"]
    lines += [f"{k:<16} {c[k]:>8} {100 * c[k] / max(n, 1):>6.2f}%" for k in OUTCOMES]
    groups = {}
    for v in verdicts:
        if v["outcome"] in FAILURES + ("memory_error", "skipped"):
            groups.setdefault(signature(v), []).append(v)
    if groups:
        lines.append("failures (and memory errors, skips) by signature: count, first (seed, index), its mutations")
        for sig, vs in sorted(groups.items(), key=lambda kv: (OUTCOMES.index(kv[1][0]["outcome"]), -len(kv[1]))):
            v = vs[0]
            lines.append(f"  {len(vs):>6}  {sig}")
            lines.append(f"          e.g. ({v['seed']}, {v['index']}) isa={v.get('isa')} inputs={v.get('inputs')}: "
                         f"{v.get('desc', '')[:300]}")
    rejected = Counter(signature(v) for v in verdicts if v["outcome"] == "rejected")
    if rejected:
        lines.append(f"commonest rejections (of {len(rejected)} kinds):")
        lines += [f"  {k:>6}  {sig}" for sig, k in rejected.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _fd_in, _fd_out, _memory, _threads = map(int, sys.argv[2:6])
    _worker_main(Connection(_fd_in, writable=False), Connection(_fd_out, readable=False), _memory, _threads)
