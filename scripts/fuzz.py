"""Long fuzz campaigns against the .qnn reader and the engine (the engine of tests/fuzz_qnn.py): progress
while it runs, a summary table at the end, the failing cases saved to --out, exit status 1 on any failure.

    python scripts/fuzz.py --cases 100000 --seed 1 --jobs 2 --out /tmp/fuzz-out
    python scripts/fuzz.py --seed 1 --replay 534 1574 --out /tmp/fuzz-out   # one case each, in full
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import fuzz_qnn  # noqa: E402
import fuzz_sandbox  # noqa: E402


def _progress(total, every_seconds=15.0):
    """A callback that prints a line every `every_seconds`: cases done, rate, failures so far."""
    began = last = time.monotonic()

    def report(verdict, verdicts):
        nonlocal last
        now = time.monotonic()
        if now - last < every_seconds and len(verdicts) < total:
            return
        last = now
        counts = fuzz_sandbox.counts(verdicts.values())
        bad = " ".join(f"{k} {counts[k]}" for k in fuzz_sandbox.FAILURES + ("memory_error",) if counts[k])
        print(f"[{len(verdicts):>8}/{total}] {now - began:6.0f} s {len(verdicts) / (now - began):6.0f} cases/s  "
              f"ran_equal {counts['ran_equal']}  {bad or 'no failures'}", flush=True)
    return report


def replay(args):
    """Each case of --replay in a worker (with the limits), its description and verdict in full, its bytes saved."""
    failed = False
    for index in args.replay:
        verdict = fuzz_sandbox.run_campaign(args.seed, [index], jobs=1, time_limit=args.time_limit,
                                            memory_limit=int(args.memory_limit * (1 << 30)))[0]
        case = fuzz_qnn.make_case(args.seed, index)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"case-s{args.seed}-i{index}.qnn"
        path.write_bytes(case.data)
        print(f"case ({args.seed}, {index}): {case.desc}\n  saved as {path}")
        for key in ("outcome", "stage", "isa", "inputs", "error", "detail", "seconds"):
            print(f"  {key}: {verdict.get(key)}")
        failed |= verdict["outcome"] in fuzz_sandbox.FAILURES
    return 1 if failed else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=10000, help="how many cases (default 10000)")
    p.add_argument("--seed", type=int, default=1, help="the campaign's seed: case i is (seed, i)")
    p.add_argument("--start", type=int, default=0, help="the first case index (default 0)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--out", default="fuzz-out", help="where failing cases and summary.txt go")
    p.add_argument("--time-limit", type=float, default=10.0, help="seconds per case (default 10)")
    p.add_argument("--memory-limit", type=float, default=3.0, help="GiB of address space per worker (default 3)")
    p.add_argument("--replay", type=int, nargs="+", metavar="INDEX", help="run only these cases, in full")
    args = p.parse_args(argv)
    if args.replay:
        return replay(args)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["scripts/fuzz.py"] + (argv if argv is not None else sys.argv[1:]))
    print(f"{command}: cases {args.start}..{args.start + args.cases - 1}, failures saved in {out}", flush=True)
    began = time.monotonic()
    verdicts = fuzz_sandbox.run_campaign(args.seed, range(args.start, args.start + args.cases), jobs=args.jobs,
                                         time_limit=args.time_limit,
                                         memory_limit=int(args.memory_limit * (1 << 30)), out_dir=out,
                                         progress=_progress(args.cases))
    text = f"{command}\n" + fuzz_sandbox.summary(verdicts, time.monotonic() - began)
    (out / "summary.txt").write_text(text + "\n", encoding="utf-8")
    print(text)
    counts = fuzz_sandbox.counts(verdicts)
    return 1 if any(counts[k] for k in fuzz_sandbox.FAILURES) else 0


if __name__ == "__main__":
    sys.exit(main())
