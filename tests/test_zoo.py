"""Tests of qruntime.zoo: model shapes and torchvision parity, the digits split, training and trained accuracy."""
import numpy as np
import pytest
import torch

from qruntime import zoo
from trained_models import cache_path, get_trained

SMALL = ["seed_cnn", "small_resnet", "small_mobilenetv2", "small_senet"]
IMAGENET = ["resnet18", "mobilenet_v2"]

# torchvision.models.resnet18() / mobilenet_v2() with 1000 classes: parameters and state_dict entries.
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "mobilenet_v2": 3_504_872}
TORCHVISION_STATE_KEYS = {"resnet18": 122, "mobilenet_v2": 314}
# A few torchvision state_dict entries and their shapes, one from each kind of module.
TORCHVISION_SHAPES = {
    "resnet18": {
        "conv1.weight": (64, 3, 7, 7),
        "layer1.0.bn2.running_var": (64,),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "layer4.1.conv2.weight": (512, 512, 3, 3),
        "fc.weight": (1000, 512),
    },
    "mobilenet_v2": {
        "features.0.0.weight": (32, 3, 3, 3),
        "features.1.conv.0.0.weight": (32, 1, 3, 3),
        "features.1.conv.1.weight": (16, 32, 1, 1),
        "features.2.conv.0.0.weight": (96, 16, 1, 1),
        "features.2.conv.1.0.weight": (96, 1, 3, 3),
        "features.2.conv.3.running_mean": (24,),
        "features.18.0.weight": (1280, 320, 1, 1),
        "classifier.1.weight": (1000, 1280),
    },
}


def test_registry_names_the_models_and_the_digits_models():
    assert set(zoo.MODELS) == set(SMALL + IMAGENET)
    assert list(zoo.DIGITS_MODELS) == SMALL
    assert set(zoo.DIGITS_RECIPES) == set(SMALL)


@pytest.mark.parametrize("name", SMALL + IMAGENET)
def test_output_shape(name):
    _, shape = zoo.MODELS[name]
    batch = 1 if name in IMAGENET else 2      # the 224x224 models run once, at batch 1: they are slow
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = zoo.build(name)(x)
    assert y.shape == (batch, 10 if name in SMALL else 1000)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", SMALL)
def test_small_models_trace_with_fx_to_the_same_function(name):
    # The converter traces with torch.fx: every zoo model must be traceable without leaf overrides.
    model = zoo.build(name)
    x = torch.rand(2, *zoo.MODELS[name][1], generator=torch.Generator().manual_seed(1))
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))


@pytest.mark.parametrize("name", IMAGENET)
def test_torchvision_parity(name):
    model = zoo.build(name)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[name]
    state = model.state_dict()
    assert len(state) == TORCHVISION_STATE_KEYS[name]
    for key, shape in TORCHVISION_SHAPES[name].items():
        assert tuple(state[key].shape) == shape, key
    torch.fx.symbolic_trace(model)


def test_num_classes_sets_the_last_layer():
    assert zoo.resnet18(num_classes=7).fc.out_features == 7
    assert zoo.mobilenet_v2(num_classes=7).classifier[1].out_features == 7
    assert zoo.SmallResNet(num_classes=3).fc.out_features == 3
    assert zoo.SmallMobileNetV2(num_classes=3).classifier[1].out_features == 3


def test_small_mobilenetv2_has_strided_and_residual_blocks():
    blocks = [m for m in zoo.SmallMobileNetV2().modules() if isinstance(m, zoo.InvertedResidual)]
    strides = [blk.conv[-3][0].stride for blk in blocks]   # the depthwise ConvBNReLU6's conv
    assert (2, 2) in strides
    assert any(blk.use_res_connect for blk in blocks)


def test_build_is_seeded_and_leaves_the_global_rng_alone():
    before = torch.random.get_rng_state()
    a, b, c = zoo.build("seed_cnn", seed=3), zoo.build("seed_cnn", seed=3), zoo.build("seed_cnn", seed=4)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    assert not a.training


def test_build_rejects_an_unknown_name():
    with pytest.raises(ValueError, match="name"):
        zoo.build("resnet50")


def test_digits_split(digits):
    x_train, y_train, x_test, y_test = digits
    assert x_train.shape == (1437, 1, 28, 28) and x_test.shape == (360, 1, 28, 28)
    assert y_train.shape == (1437,) and y_test.shape == (360,)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.flags.c_contiguous and x_test.flags.c_contiguous
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    # Stratified: every class holds 20 % of its images in the test set, to within one image.
    train_counts, test_counts = np.bincount(y_train, minlength=10), np.bincount(y_test, minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * (train_counts + test_counts)) <= 1)


def test_digits_split_is_deterministic(digits):
    again = zoo.load_digits_28(seed=0)
    for a, b in zip(digits, again):
        np.testing.assert_array_equal(a, b)
    other = zoo.load_digits_28(seed=1)
    assert not np.array_equal(digits[1], other[1])
    # The same 1797 images either way, only split differently.
    all_0 = np.sort(np.concatenate([digits[0], digits[2]]).reshape(1797, -1), axis=0)
    all_1 = np.sort(np.concatenate([other[0], other[2]]).reshape(1797, -1), axis=0)
    np.testing.assert_array_equal(all_0, all_1)


def test_train_is_deterministic_and_leaves_the_global_rng_alone(digits):
    x, y = digits[0][:64], digits[1][:64]
    before = torch.random.get_rng_state()
    # SmallMobileNetV2 has dropout: the seed must fix its masks too, not only the batch order.
    a = zoo.train(zoo.build("small_mobilenetv2"), x, y, epochs=1, seed=5, batch_size=32)
    b = zoo.train(zoo.build("small_mobilenetv2"), x, y, epochs=1, seed=5, batch_size=32)
    c = zoo.train(zoo.build("small_mobilenetv2"), x, y, epochs=1, seed=6, batch_size=32)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert not a.training
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    untrained = zoo.build("small_mobilenetv2").state_dict()
    assert not torch.equal(sa["classifier.1.weight"], untrained["classifier.1.weight"])


@pytest.mark.parametrize("kwargs, arg", [
    ({"epochs": 0}, "epochs"),
    ({"epochs": 1, "batch_size": 0}, "batch_size"),
])
def test_train_rejects_bad_arguments(digits, kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        zoo.train(zoo.build("seed_cnn"), digits[0][:8], digits[1][:8], **kwargs)


def test_train_rejects_mismatched_labels(digits):
    with pytest.raises(ValueError, match="y_train"):
        zoo.train(zoo.build("seed_cnn"), digits[0][:8], digits[1][:7], epochs=1)


def test_accuracy_counts_top1_in_percent():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return x[:, :3]            # the input itself as logits
    x = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    assert zoo.accuracy(Fixed(), x, torch.tensor([1, 0, 2, 2])) == 75.0
    assert zoo.accuracy(Fixed(), x, torch.tensor([1, 0, 2, 2]), batch_size=3) == 75.0
    with pytest.raises(ValueError, match="y"):
        zoo.accuracy(Fixed(), x, torch.tensor([1, 0]))


@pytest.mark.parametrize("name", SMALL)
def test_trained_small_models_reach_95_percent(trained, digits, name):
    model, acc = trained(name)
    assert not model.training
    assert acc >= 95.0, f"{name}: {acc:.2f} % on the digits test set"
    assert zoo.accuracy(model, digits[2], digits[3]) == acc


def test_trained_weights_are_cached_and_reload_identically(trained, digits, trained_cache_dir):
    model, acc = trained("seed_cnn")
    path = cache_path(trained_cache_dir, "seed_cnn")
    assert path.is_file() and path.parent == trained_cache_dir
    reloaded, reloaded_acc = get_trained("seed_cnn", trained_cache_dir, digits)   # a load, not a retrain
    assert reloaded_acc == acc
    with torch.no_grad():
        x = torch.as_tensor(digits[2][:16])
        assert torch.equal(reloaded(x), model(x))
