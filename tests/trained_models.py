"""Pytest plugin: the digits split and the small zoo models trained on it, cached in pytest's cache dir.

Load it from tests/conftest.py with `pytest_plugins = ["trained_models"]`. Fixtures:
  digits   (session) -> (x_train, y_train, x_test, y_test) of zoo.load_digits_28(seed=0)
  trained  (session) -> a function trained(name) -> (model in eval mode, fp32 test accuracy in %)
Each model is trained at most once per session and its state_dict kept on disk (safetensors, never
pickle) under .pytest_cache, keyed by model name, seed and a hash of zoo.py, so editing a model or its
recipe retrains it. Nothing is written into the repository. torch, scikit-learn and safetensors are
dev dependencies: a missing one fails the tests that need it rather than skipping them.
"""
import copy
import hashlib
import os
from pathlib import Path

import pytest

CACHE_SUBDIR = "qruntime-trained"
DIGITS_SEED = 0


def cache_path(cache_dir, name, seed=DIGITS_SEED):
    """Where the state_dict of `name` trained with `seed` by the current zoo.py lives in cache_dir."""
    from qruntime import zoo
    zoo_hash = hashlib.sha256(Path(zoo.__file__).read_bytes()).hexdigest()[:16]
    return Path(cache_dir) / f"{name}-seed{seed}-{zoo_hash}.safetensors"


def get_trained(name, cache_dir, data, seed=DIGITS_SEED):
    """(model in eval mode, fp32 test accuracy in %) of zoo model `name` trained on `data` with `seed`.

    Loads the state_dict from cache_dir when the current zoo.py already trained it; otherwise
    trains, saves it (atomically, so a parallel or interrupted run never leaves half a file) and
    removes the files older versions of zoo.py left for this name and seed.
    """
    from safetensors.torch import load_file, save_file

    from qruntime import zoo

    path = cache_path(cache_dir, name, seed)
    if path.exists():
        model = zoo.build(name, seed)
        model.load_state_dict(load_file(path))
        model.eval()
    else:
        model = zoo.train_digits(name, seed, data)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        save_file(model.state_dict(), partial)
        os.replace(partial, path)
        for stale in path.parent.glob(f"{name}-seed{seed}-*.safetensors"):
            if stale != path:
                stale.unlink(missing_ok=True)
    return model, zoo.accuracy(model, data[2], data[3])


@pytest.fixture(scope="session")
def digits():
    """The digits split of zoo.load_digits_28(seed=0): (x_train, y_train, x_test, y_test)."""
    from qruntime import zoo
    return zoo.load_digits_28(seed=DIGITS_SEED)


@pytest.fixture(scope="session")
def trained_cache_dir(request, tmp_path_factory):
    """pytest's cache dir for trained weights (a session temp dir when the cache plugin is disabled)."""
    cache = getattr(request.config, "cache", None)
    if cache is None:
        return tmp_path_factory.mktemp(CACHE_SUBDIR)
    return cache.mkdir(CACHE_SUBDIR)


@pytest.fixture(scope="session")
def trained(digits, trained_cache_dir):
    """trained(name) -> (model, fp32 test accuracy %) for a name in zoo.DIGITS_MODELS.

    Each call returns a fresh copy of the model, so a test that changes it cannot affect another.
    """
    models = {}

    def get(name):
        if name not in models:
            models[name] = get_trained(name, trained_cache_dir, digits)
        model, acc = models[name]
        return copy.deepcopy(model), acc

    return get
