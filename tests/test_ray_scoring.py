"""Batch scoring on Ray Data (issue 16, item 5): a Model travels to Ray's workers pickled, and
`ds.map_batches` with examples/score_images_ray.py gives exactly what Model.run gives.

Each test starts its own local Ray (never two at once, whatever the test order): 2 CPUs, no
dashboard, its files in a temp dir, on loopback only. ray is a dev dependency: a missing one fails
here, never skips."""
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Before ray is imported: Ray's switch for a single-node instance that uses loopback only (the
# default on Windows and macOS), so nothing here is addressed to the machine's network address.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
import ray  # noqa: E402
from PIL import Image  # noqa: E402

import qruntime  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "score_images_ray.py"

# Ray Data reads its own deprecated settings when it copies its context: noise from inside Ray.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


def subprocess_env(**extra):
    """This environment, with this qruntime first on the path (the tests may run from the source tree)."""
    path = os.pathsep.join([str(Path(qruntime.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path, **extra)


def load_example():
    spec = importlib.util.spec_from_file_location("score_images_ray", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    # The workers cannot import a file from examples/: Ray sends its classes and functions by value.
    ray.cloudpickle.register_pickle_by_value(module)
    return module


@pytest.fixture
def ray_temp():
    """A temp dir for Ray's files, removed after the test; short, as Ray's unix socket paths live under it."""
    temp = tempfile.mkdtemp(prefix="qr-ray-")
    yield temp
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def local_ray(ray_temp):
    """A local Ray in this process, with a small object store; shut down after the test."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=128 * 2**20,
             _temp_dir=ray_temp, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def example():
    return load_example()


@pytest.fixture(scope="module")
def quantized(trained, digits):
    model, _ = trained("seed_cnn")
    return qruntime.quantize(model, [digits[0][:256]], progress=False)


def digits_2000(digits):
    """2,000 real digit images: all 1,797 of scikit-learn's, then the first 203 shifted one pixel
    to the right (distinct images, still digits)."""
    x = np.concatenate([digits[0], digits[2]])
    x = np.concatenate([x, np.roll(x[:2000 - len(x)], 1, axis=3)])
    assert x.shape == (2000, 1, 28, 28) and x.dtype == np.float32
    return x


def test_map_batches_equals_model_run_bit_for_bit(local_ray, example, quantized, digits):
    x = digits_2000(digits)
    context = ray.data.DataContext.get_current()
    before = context.execution_options.preserve_order, context.enable_progress_bars
    context.execution_options.preserve_order = True  # rows come back in the order they went in
    context.enable_progress_bars = False
    try:
        ds = ray.data.from_items([{"id": i, "image": image} for i, image in enumerate(x)], override_num_blocks=8)
        # `quantized` came from qruntime.quantize and was never saved: the actors can only get it by pickle.
        rows = example.score(ds, quantized, actors=2, batch_size=128).take_all()
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = before
    ids = np.array([r["id"] for r in rows])
    got = np.stack([r["output"] for r in rows])
    want = quantized.run(x)
    np.testing.assert_array_equal(ids, np.arange(len(x)))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal([r["label"] for r in rows], want.argmax(axis=1))


def test_the_example_scores_a_directory_of_images(ray_temp, example, quantized, digits, tmp_path):
    """As the README runs it: the script starts its own local Ray."""
    images = tmp_path / "images"
    images.mkdir()
    for i, image in enumerate(digits[2][:300]):
        Image.fromarray(np.round(image[0] * 255).astype(np.uint8)).save(images / f"{i:04d}.png")
    (images / "notes.txt").write_text("not an image: skipped")
    quantized.save(tmp_path / "digits.qnn")
    command = [sys.executable, str(EXAMPLE), str(tmp_path / "digits.qnn"), str(images), "-o", str(tmp_path / "out"),
               "--size", "28", "28", "--gray", "--batch-size", "64", "--num-cpus", "2"]
    run = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(RAY_TMPDIR=ray_temp), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "scored 300 images on 2 actor(s)" in run.stdout

    table = pq.read_table(tmp_path / "out").sort_by("path")
    paths = table.column("path").to_pylist()
    assert paths == example.list_images(str(images))
    output = table.column("output").combine_chunks()
    got = getattr(output, "storage", output).flatten().to_numpy().reshape(len(paths), -1)
    x = example.load_images(paths, (28, 28), gray=True)
    np.testing.assert_allclose(x, digits[2][:300], rtol=0, atol=0.5 / 255 + 1e-6)  # the PNGs read back in place
    want = qruntime.load(tmp_path / "digits.qnn").run(x)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(table.column("label").to_numpy(), want.argmax(axis=1))


def test_import_qruntime_never_imports_ray():
    code = "import sys, qruntime, qruntime.model; print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
                         check=True)
    assert run.stdout.strip() == "[]"
