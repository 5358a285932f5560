"""Scores a directory of images with a qruntime model on Ray Data, one Ray actor per CPU.

    pip install 'qruntime[scale]'
    python examples/score_images_ray.py model.qnn images/ -o predictions/ --size 28 28 --gray

The driver lists the image files and loads the model once; `map_batches` then hands the Model to
each actor by pickling it (the .qnn file's bytes, validated on arrival like qruntime.load and
prepared for that worker's CPU, so workers need no copy of the file). Each actor reads its batch of
files with PIL, resizes and normalises them with numpy, runs the model and returns path, label and
the raw outputs, which are written as Parquet files in the output directory.

`--address` joins a running cluster (every node needs qruntime and these packages); without it a
local Ray starts with `--num-cpus` CPUs. Scorer and score() work on any dataset whose batches hold
"path" (files to read) or "image" (float32 NCHW arrays, already preprocessed).
"""
import argparse
import os
import sys
import time

import numpy as np

import qruntime

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def list_images(directory):
    """The image files directly in `directory`, sorted by name."""
    names = sorted(n for n in os.listdir(directory) if n.lower().endswith(IMAGE_EXTENSIONS))
    return [os.path.join(directory, n) for n in names]


def load_images(paths, size, gray=False, mean=0.0, std=1.0):
    """float32 (N, C, H, W) images: read with PIL, resized to size=(H, W) (bilinear), scaled to [0, 1],
    then (x - mean) / std, per channel when mean and std are sequences. Do here what the model's
    training data went through: the model takes the floats it was calibrated on."""
    from PIL import Image  # only the workers that read files need it

    h, w = size
    batch = np.empty((len(paths), 1 if gray else 3, h, w), np.float32)
    for i, path in enumerate(paths):
        with Image.open(path) as im:
            im = im.convert("L" if gray else "RGB").resize((w, h), Image.BILINEAR)
            a = np.asarray(im, dtype=np.float32) / 255.0
        batch[i] = a[None] if gray else a.transpose(2, 0, 1)
    mean = np.asarray(mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(std, np.float32).reshape(-1, 1, 1)
    return (batch - mean) / std


class Scorer:
    """A map_batches callable: Ray builds one per actor, and the model arrives pickled."""

    def __init__(self, model, threads=1, **load_args):
        # One actor per CPU: one thread each, so that actors do not fight over cores.
        qruntime.set_num_threads(threads)
        self.model = model
        self.load_args = load_args

    def __call__(self, batch):
        if "path" in batch:
            x = load_images(list(batch["path"]), **self.load_args)
        else:
            x = batch["image"]
        y = self.model.run(x)
        if not isinstance(y, np.ndarray) or y.ndim != 2:
            raise ValueError("Scorer scores classifiers: one output of shape (N, classes)")
        out = {k: v for k, v in batch.items() if k != "image"}  # ids and paths pass through
        out["label"] = y.argmax(axis=1)
        out["output"] = y
        return out


def score(ds, model, *, actors=2, batch_size=256, **load_args):
    """ds with "label" and "output" columns added by `model` (a qruntime.Model), on `actors` actors."""
    import ray

    # Reading happens inside the actors, in the same stage as scoring: a separate read stage would
    # wait for CPUs that a full actor pool holds.
    return ds.map_batches(Scorer, fn_constructor_kwargs={"model": model, **load_args}, batch_size=batch_size,
                          compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="the .qnn file")
    p.add_argument("images", help="a directory of image files")
    p.add_argument("-o", "--output", required=True, help="directory for the Parquet files of predictions")
    p.add_argument("--size", type=int, nargs=2, required=True, metavar=("H", "W"), help="the model's input size")
    p.add_argument("--gray", action="store_true", help="one channel (else RGB)")
    p.add_argument("--mean", type=float, nargs="+", default=[0.0], help="subtracted after scaling to [0, 1]")
    p.add_argument("--std", type=float, nargs="+", default=[1.0], help="then divided by")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--address", help="a running Ray cluster to join (default: start a local one)")
    p.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray, one actor each")
    args = p.parse_args(argv)

    import ray

    paths = list_images(args.images)
    if not paths:
        p.error(f"no image files in {args.images}")
    model = qruntime.load(args.model)  # once, here: the actors get it pickled, not from the path
    if args.address:
        ray.init(address=args.address)
    else:
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False)
    try:
        actors = max(1, int(ray.cluster_resources().get("CPU", 1)))
        start = time.perf_counter()
        ds = ray.data.from_items([{"path": path} for path in paths])
        preds = score(ds, model, actors=actors, batch_size=args.batch_size, size=tuple(args.size),
                      gray=args.gray, mean=args.mean, std=args.std)
        preds.write_parquet(args.output)
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    print(f"scored {len(paths)} images on {actors} actor(s) in {seconds:.1f} s: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
