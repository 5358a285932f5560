"""torchvision 0.28.0's model definitions with random weights, loaded from its wheel without installing torchvision.

torchvision's wheel on PyPI is a CUDA build whose C extension does not load with our CPU torch
(`import torchvision` fails at `torchvision::nms`), and an installed torchvision also changes what
`transformers` imports. Its model code is pure Python, so `load()` copies just the files the model
builders need out of the wheel (build/wheels/, fetched with `pip download` when absent) into
build/torchvision_models/<PACKAGE>/, a package with another name that never imports the C extension:

- the package `__init__.py` files are replaced by minimal ones (no `_C`, no `torchvision.ops` boxes/nms,
  no datasets/io/transforms v1 classes): ops/__init__ only re-exports StochasticDepth (efficientnet
  imports it from there), transforms/__init__ only InterpolationMode (the weight presets name it);
- `_internally_replaced_utils.py` is replaced by a `load_state_dict_from_url` that raises, so no
  builder can download weights;
- absolute `torchvision` imports are rewritten to PACKAGE (efficientnet's `from torchvision.ops import
  StochasticDepth`, and two in utils.py inside functions the models never call).

Every other file is the wheel's own bytes, so the module names inside a model are torchvision's
(`features.0.0`, `layer1.0.conv1`, ...), which is what users' keep_float names refer to. What does
differ is the Python module path of its classes and functions: torch.fx shows stochastic_depth as
`_tvmodels_0_28_0.ops.stochastic_depth.stochastic_depth`, so the converter must not recognise
torchvision's functions by their module path alone. The extracted code imports PIL (a dev extra).
"""
import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

VERSION = "0.28.0"
PACKAGE = "_tvmodels_0_28_0"
ROOT = Path(__file__).resolve().parents[1] / "build"
WHEELS = ROOT / "wheels"
TARGET = ROOT / "torchvision_models"

# The architectures the tests cover, with the input size each is tested at: small, so that
# tests/test_tv_models.py stays around a minute on 2 cores, yet every stride-32 backbone still ends
# on a 3x3 map or larger (the heavier ones take 96, the rest 128).
SIZES = {
    "resnet18": 128, "resnet50": 96, "mobilenet_v2": 128, "mobilenet_v3_small": 128,
    "mobilenet_v3_large": 128, "efficientnet_b0": 128, "shufflenet_v2_x1_0": 128,
    "squeezenet1_1": 128, "regnet_y_400mf": 128, "mnasnet0_5": 128, "convnext_tiny": 96,
    "densenet121": 96, "googlenet": 96, "lraspp_mobilenet_v3_large": 128, "fcn_resnet50": 96,
}
NAMES = tuple(SIZES)

# Wheel files the builders of NAMES import, relative to torchvision/ (the rest of the wheel is never read).
_FILES = (
    "_utils.py", "utils.py",
    "ops/misc.py", "ops/stochastic_depth.py",
    "transforms/_presets.py", "transforms/functional.py", "transforms/_functional_pil.py",
    "transforms/_functional_tensor.py",
    "models/_api.py", "models/_meta.py", "models/_utils.py",
    "models/resnet.py", "models/mobilenetv2.py", "models/mobilenetv3.py", "models/efficientnet.py",
    "models/shufflenetv2.py", "models/squeezenet.py", "models/regnet.py", "models/mnasnet.py",
    "models/convnext.py", "models/densenet.py", "models/googlenet.py",
    "models/segmentation/_utils.py", "models/segmentation/fcn.py", "models/segmentation/lraspp.py",
)
# The modules whose import registers the builders (models/_api.py's register_model).
_BUILDER_MODULES = [f[:-3].replace("/", ".") for f in _FILES
                    if f.startswith("models/") and not f.rsplit("/", 1)[1].startswith("_")]

# Files written in place of the wheel's.
_REPLACED = {
    "__init__.py": f'"""torchvision {VERSION} model code, extracted by tests/tv_models.py; no C extension."""\n',
    "ops/__init__.py": "from .stochastic_depth import StochasticDepth  # noqa: F401  (efficientnet imports it from here)\n",
    "models/__init__.py": "",
    "models/segmentation/__init__.py": "",
    "transforms/__init__.py": "from .functional import InterpolationMode  # noqa: F401  (the presets import it from here)\n",
    "_internally_replaced_utils.py": (
        "def load_state_dict_from_url(url, *args, **kwargs):\n"
        "    raise RuntimeError(f'tests/tv_models.py builds models with random weights only; refusing to download {url}')\n"
    ),
}
_ABSOLUTE_IMPORT = re.compile(r"^(\s*(?:from|import)\s+)torchvision\b", re.M)


def wheel():
    """The torchvision wheel in build/wheels, downloaded from the package index (no dependencies) if absent."""
    found = sorted(WHEELS.glob(f"torchvision-{VERSION}-*.whl"))
    if not found:
        WHEELS.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        f"torchvision=={VERSION}", "-d", str(WHEELS)], check=True)
        found = sorted(WHEELS.glob(f"torchvision-{VERSION}-*.whl"))
        if not found:
            raise RuntimeError(f"pip download left no torchvision-{VERSION} wheel in {WHEELS}")
    return found[-1]


def _extract(whl, dest):
    with zipfile.ZipFile(whl) as z:
        for rel in _FILES:
            text = z.read(f"torchvision/{rel}").decode()
            _write(dest / rel, _ABSOLUTE_IMPORT.sub(rf"\g<1>{PACKAGE}", text))
    for rel, text in _REPLACED.items():
        _write(dest / rel, text)


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _stamp(whl):
    """Names what an extracted tree was made from: the wheel's bytes and this file's recipe."""
    h = hashlib.sha256(whl.read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()


def package_dir():
    """build/torchvision_models/PACKAGE, extracted from the wheel unless an identical extraction is there."""
    whl = wheel()
    dest = TARGET / PACKAGE
    stamp = _stamp(whl)
    if (dest / ".stamp").is_file() and (dest / ".stamp").read_text() == stamp:
        return dest
    TARGET.mkdir(parents=True, exist_ok=True)
    # Extract beside, then swap in: a concurrent or interrupted run never sees half a tree.
    tmp = Path(tempfile.mkdtemp(prefix=f".{PACKAGE}-", dir=TARGET))
    try:
        _extract(whl, tmp)
        (tmp / ".stamp").write_text(stamp)
        old = TARGET / f".{PACKAGE}-old-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def load():
    """The private package's models/_api module, with every builder of NAMES registered."""
    dest = package_dir()
    if str(dest.parent) not in sys.path:
        sys.path.insert(0, str(dest.parent))
    for module in _BUILDER_MODULES:
        importlib.import_module(f"{PACKAGE}.{module}")
    check_no_torchvision()
    return importlib.import_module(f"{PACKAGE}.models._api")


def check_no_torchvision():
    """Raises if torchvision (its C extension above all) got imported or became importable."""
    loaded = sorted(m for m in sys.modules if m == "torchvision" or m.startswith("torchvision."))
    if loaded:
        raise RuntimeError(f"torchvision modules were imported: {loaded}")
    if importlib.util.find_spec("torchvision") is not None:  # what transformers asks before importing it
        raise RuntimeError("a package named torchvision is importable; transformers would import it")


def build(name, bn_batches=None, seed=0, **kwargs):
    """torchvision's `name` with random weights (torchvision's own init, torch seed `seed`), in eval mode.

    weights=None always, and weights_backbone=None for the segmentation models (no downloads); kwargs
    go to the builder (e.g. num_classes=10). Untrained BatchNorm layers hold mean 0 and variance 1,
    which leaves deep random networks with activations that blow up or die out; so the running
    statistics are set from real photos: a forward pass over bn_batches (default: 4 batches of 8
    calibration crops at SIZES[name], from tests/photos.py) with only the BatchNorm layers in
    training mode, averaging over all batches (momentum None), then everything back to eval mode.
    bn_batches=() keeps torchvision's mean 0 / variance 1.
    """
    if name not in SIZES:
        raise ValueError(f"unknown architecture {name!r}; NAMES: {', '.join(NAMES)}")
    builder = load().get_model_builder(name)
    if "weights_backbone" in inspect.signature(builder).parameters:
        kwargs["weights_backbone"] = None
    if name == "googlenet":
        kwargs.setdefault("init_weights", True)  # its default None means True, with a FutureWarning
    with torch.random.fork_rng(devices=[]):  # the caller's random stream stays as it was
        torch.manual_seed(seed)
        model = builder(weights=None, **kwargs).eval()
    if bn_batches is None:
        import photos
        bn_batches = photos.photo_batches("calibration", SIZES[name])
    set_batchnorm_stats(model, bn_batches)
    check_no_torchvision()
    return model


def set_batchnorm_stats(model, batches):
    """Sets every BatchNorm's running mean/var to its input's mean/var over `batches` (numpy or tensors)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the batches, not an exponential one
        bn.train()
    with torch.no_grad():
        for b in batches:
            model(torch.as_tensor(b))
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
    model.eval()
