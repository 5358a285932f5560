"""The demo (README's first command): train the seed CNN on real digits, quantize it, save model.qnn,
load it in a fresh process without torch, and compare accuracy, latency and size against float."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

BATCHES = (1, 256)


def median_ms(fn, x, min_runs=20, min_seconds=0.5):
    """Median wall time of fn(x) in ms, after two warm-up calls."""
    fn(x)
    fn(x)
    times, start = [], time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def int8_side(qnn_path, data_path):
    """Runs in a fresh process: numpy + qruntime only. Prints a JSON line of its figures."""
    import qruntime
    t0 = time.perf_counter()
    model = qruntime.load(qnn_path)
    load_ms = 1e3 * (time.perf_counter() - t0)
    data = np.load(data_path)
    x, y = data["x_test"], data["y_test"]
    logits = model.run(x)
    result = {
        "torch_imported": "torch" in sys.modules,
        "accuracy": float(100.0 * np.mean(logits.argmax(1) == y)),
        "load_ms": load_ms,
        "isa": qruntime.isa(),
        "threads": qruntime.get_num_threads(),
        "latency_ms": {str(b): median_ms(model.run, np.ascontiguousarray(x[:b])) for b in BATCHES},
    }
    np.save(data_path + ".logits.npy", logits)
    print(json.dumps(result))


def main():
    import torch
    import qruntime
    from qruntime import zoo

    torch.set_num_threads(os.cpu_count() or 1)
    t_start = time.perf_counter()
    x_train, y_train, x_test, y_test = zoo.load_digits_28(seed=0)
    print(f"digits: {len(x_train)} training and {len(x_test)} test images, 1x28x28 (scikit-learn, upsampled 8x8)")
    model = zoo.train_digits("seed_cnn", seed=0, data=(x_train, y_train, x_test, y_test))
    print(f"trained the seed CNN in {time.perf_counter() - t_start:.1f} s")

    with torch.no_grad():
        fp32_logits = model(torch.from_numpy(x_test)).numpy()
    fp32_acc = 100.0 * np.mean(fp32_logits.argmax(1) == y_test)
    calibration = [x_train[i:i + 64] for i in range(0, 512, 64)]
    qm = qruntime.quantize(model, calibration, progress=False)

    out = tempfile.mkdtemp(prefix="qruntime-demo-")
    qnn_path, fp32_path = os.path.join(out, "model.qnn"), os.path.join(out, "model_fp32.pt")
    qm.save(qnn_path)
    torch.save(model.state_dict(), fp32_path)
    data_path = os.path.join(out, "digits_test.npz")
    np.savez(data_path, x_test=x_test, y_test=y_test)

    with torch.no_grad():
        fp32_ms = {str(b): median_ms(lambda x: model(x), torch.from_numpy(np.ascontiguousarray(x_test[:b])))
                   for b in BATCHES}
    run = subprocess.run([sys.executable, __file__, "--int8-side", qnn_path, data_path], capture_output=True,
                         text=True, check=False)
    if run.returncode != 0:
        sys.exit(f"the int8 process failed:\n{run.stderr}")
    int8 = json.loads(run.stdout.strip().splitlines()[-1])
    if int8["torch_imported"]:
        sys.exit("the int8 process imported torch; it must run on numpy and qruntime alone")
    int8_logits = np.load(data_path + ".logits.npy")
    agree = 100.0 * np.mean(int8_logits.argmax(1) == fp32_logits.argmax(1))

    qnn_kb, fp32_kb = os.path.getsize(qnn_path) / 1024, os.path.getsize(fp32_path) / 1024
    print()
    print(f"{'':34} {'torch fp32':>12} {'qruntime int8':>14}")
    print(f"{'top-1 on the 360 test digits':34} {fp32_acc:>11.2f}% {int8['accuracy']:>13.2f}%")
    for b in BATCHES:
        f, q = fp32_ms[str(b)], int8["latency_ms"][str(b)]
        print(f"{f'latency, batch {b} (median ms)':34} {f:>12.3f} {q:>14.3f}   {f / q:.1f}x")
    print(f"{'model file (KiB)':34} {fp32_kb:>12.1f} {qnn_kb:>14.1f}   {qnn_kb / fp32_kb:.0%} of fp32")
    print()
    print(f"argmax agreement int8 vs fp32: {agree:.2f}%; int8 process: torch not imported, load {int8['load_ms']:.1f} ms, "
          f"ISA path {int8['isa']}, {int8['threads']} thread(s)")
    print(f"files in {out}; total {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--int8-side", nargs=2, metavar=("QNN", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.int8_side:
        int8_side(*args.int8_side)
    else:
        main()
