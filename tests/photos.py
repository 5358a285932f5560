"""Real photos for calibrating and evaluating ImageNet-style models: random crops of scikit-learn's two sample images."""
import functools

import numpy as np

# torchvision's ImageNet normalisation (what its pretrained models' presets apply).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

# Calibration and evaluation draw from different seeds: the crops overlap in content (two photos in
# all) but no evaluation crop is a calibration crop.
SPLIT_SEEDS = {"calibration": 0, "evaluation": 1}


@functools.lru_cache(maxsize=None)
def _images():
    """The two 427x640 RGB photos (a temple in China, a flower) shipped inside scikit-learn; needs Pillow."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    return tuple(Image.fromarray(img) for img in load_sample_images().images)


def random_crop(rng, size):
    """One HxWx3 float32 crop in [0, 1]: a random photo, area 5-100 % of the largest square, aspect 3/4-4/3,
    maybe mirrored, resized (bilinear, antialiased) to size x size."""
    from PIL import Image

    img = _images()[rng.integers(len(_images()))]
    side = min(img.size)
    area = rng.uniform(0.05, 1.0) * side * side
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    w = int(min(img.width, round(np.sqrt(area * aspect))))
    h = int(min(img.height, round(np.sqrt(area / aspect))))
    left = int(rng.integers(img.width - w + 1))
    top = int(rng.integers(img.height - h + 1))
    crop = img.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h), reducing_gap=None)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(crop, np.float32) / 255.0


def photo_batches(split, size=224, batches=4, batch_size=8):
    """`batches` float32 NCHW arrays of `batch_size` crops each, normalised with ImageNet's mean/std.

    split is "calibration" or "evaluation"; the same arguments always give the same pixels.
    """
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}")
    rng = np.random.default_rng([SPLIT_SEEDS[split], size])
    out = []
    for _ in range(batches):
        crops = np.stack([random_crop(rng, size) for _ in range(batch_size)])
        out.append(np.ascontiguousarray(((crops - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2)))
    return out
