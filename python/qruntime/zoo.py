"""Reference models, the digits data and the training recipe used by the demo, tests and benchmarks."""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "SeedCNN",
    "SmallResNet",
    "SmallMobileNetV2",
    "SmallSENet",
    "SqueezeExcitation",
    "resnet18",
    "mobilenet_v2",
    "BasicBlock",
    "ConvBNReLU6",
    "InvertedResidual",
    "ResNet18",
    "MobileNetV2",
    "MODELS",
    "DIGITS_MODELS",
    "DIGITS_RECIPES",
    "build",
    "load_digits_28",
    "train",
    "train_digits",
    "accuracy",
]


class SeedCNN(nn.Module):
    """The seed model of DESIGN.md §10: two convs, average pooling and two linear layers on 1x28x28."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.fc1 = nn.Linear(64 * 6 * 6, 100)
        self.fc2 = nn.Linear(100, 10)

    def forward(self, x):
        # Module and functional forms mixed on purpose: the converter must map both.
        x = self.relu1(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.avg_pool2d(x, 4)          # 24x24 -> 6x6
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


# ---- ResNet (torchvision's layout and module names) -------------------------------------------

def _conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: two 3x3 conv+BN, an optional 1x1 conv+BN shortcut, in-place add."""

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(_conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity                 # in place, as torchvision writes it (torch.fx records operator.add)
        return self.relu(out)


def _resnet_stage(inplanes, planes, blocks, stride):
    layers = [BasicBlock(inplanes, planes, stride)]
    layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def _init_resnet(model):
    # torchvision's initialisation, so a freshly built model has realistic activation ranges.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ResNet18(nn.Module):
    """torchvision.models.resnet18 layer for layer: its state_dict keys and shapes are identical."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _resnet_stage(64, 64, 2, stride=1)
        self.layer2 = _resnet_stage(64, 128, 2, stride=2)
        self.layer3 = _resnet_stage(128, 256, 2, stride=2)
        self.layer4 = _resnet_stage(256, 512, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        _init_resnet(self)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18(num_classes=1000):
    """ResNet-18 with torchvision's module names, randomly initialised (no pretrained weights)."""
    return ResNet18(num_classes)


class SmallResNet(nn.Module):
    """A ResNet for 1x28x28 digits: 3x3 stem, three stages of one BasicBlock (16/32/64 wide, 28/14/7 px)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = _conv3x3(1, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _resnet_stage(16, 16, 1, stride=1)
        self.layer2 = _resnet_stage(16, 32, 1, stride=2)
        self.layer3 = _resnet_stage(32, 64, 1, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        _init_resnet(self)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


# ---- MobileNetV2 (torchvision's layout and module names) --------------------------------------

def _make_divisible(v, divisor=8):
    """torchvision's channel rounding: nearest multiple of divisor, never more than 10% below v."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNReLU6(nn.Sequential):
    """Conv2d (no bias, 'same' padding) + BatchNorm2d + ReLU6: torchvision's Conv2dNormActivation, keys 0/1/2."""

    def __init__(self, in_planes, out_planes, kernel_size=3, stride=1, groups=1):
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection; a residual add when shapes match."""

    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(inp, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


def _init_mobilenet(model):
    # torchvision's initialisation.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class MobileNetV2(nn.Module):
    """A MobileNetV2 body: stem, inverted residual stages (t, c, n, s), 1x1 head conv, pool, dropout, linear."""

    def __init__(self, stages, in_channels, stem_channels, stem_stride, last_channel, num_classes, dropout):
        super().__init__()
        features = [ConvBNReLU6(in_channels, stem_channels, stride=stem_stride)]
        channels = stem_channels
        for t, c, n, s in stages:
            out = _make_divisible(c)
            for i in range(n):
                features.append(InvertedResidual(channels, out, s if i == 0 else 1, expand_ratio=t))
                channels = out
        features.append(ConvBNReLU6(channels, last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(last_channel, num_classes))
        _init_mobilenet(self)

    def forward(self, x):
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, (1, 1))   # functional, as torchvision writes it
        x = torch.flatten(x, 1)
        return self.classifier(x)


_MOBILENET_V2_STAGES = [
    # t (expansion), c (channels), n (blocks), s (stride of the first block)
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


def mobilenet_v2(num_classes=1000):
    """torchvision.models.mobilenet_v2 (width 1.0) layer for layer, randomly initialised (no pretrained weights)."""
    return MobileNetV2(_MOBILENET_V2_STAGES, in_channels=3, stem_channels=32, stem_stride=2,
                       last_channel=1280, num_classes=num_classes, dropout=0.2)


_SMALL_MOBILENET_V2_STAGES = [
    [1, 16, 1, 1],   # 14x14, no expansion (as torchvision's first block)
    [4, 24, 2, 2],   # 7x7; the second block adds its input
    [4, 32, 2, 2],   # 4x4 (an odd size halved, padding 1); the second block adds its input
]


class SmallMobileNetV2(MobileNetV2):
    """A MobileNetV2 for 1x28x28 digits: stride-2 stem, three stages (16/24/32 wide), 128-wide head.

    The stem halves the input at once (as torchvision's does): the digits hold only 8x8 pixels of
    detail, and depthwise training at 28x28 would cost three times as long for no accuracy.
    """

    def __init__(self, num_classes=10):
        super().__init__(_SMALL_MOBILENET_V2_STAGES, in_channels=1, stem_channels=16, stem_stride=2,
                         last_channel=128, num_classes=num_classes, dropout=0.2)


# ---- A small squeeze-excitation network (MobileNetV3's SE block, torchvision's layout) ----------

class SqueezeExcitation(nn.Module):
    """x * hardsigmoid(fc2(relu(fc1(avgpool(x))))), the fcs 1x1 convs: torchvision's SqueezeExcitation."""

    def __init__(self, channels, squeeze_channels):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * scale


def _conv_bn_relu(in_channels, out_channels, stride=1):
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False), nn.BatchNorm2d(out_channels),
                         nn.ReLU(inplace=True))


class SmallSENet(nn.Module):
    """Squeeze-excitation, a residual and global pooling on 1x28x28 digits: the patterns that stress calibration
    (a few pooled values per image feed each SE gate and the classifier)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = _conv_bn_relu(1, 16, stride=2)  # 14x14 at once, as SmallMobileNetV2: the digits hold 8x8 of detail
        self.block = nn.Sequential(_conv_bn_relu(16, 16), nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                   SqueezeExcitation(16, 8))
        self.relu = nn.ReLU(inplace=True)
        self.down1 = nn.Sequential(_conv_bn_relu(16, 32, stride=2), SqueezeExcitation(32, 8))
        self.down2 = _conv_bn_relu(32, 64, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = self.relu(x + self.block(x))
        x = self.down2(self.down1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# name -> (constructor, input shape (C, H, W))
MODELS = {
    "seed_cnn": (SeedCNN, (1, 28, 28)),
    "small_resnet": (SmallResNet, (1, 28, 28)),
    "small_mobilenetv2": (SmallMobileNetV2, (1, 28, 28)),
    "small_senet": (SmallSENet, (1, 28, 28)),
    "resnet18": (resnet18, (3, 224, 224)),
    "mobilenet_v2": (mobilenet_v2, (3, 224, 224)),
}

# The models trained on the digits and their recipes for train(). Measured on 2 cores (Zen 3, seeds 0-2):
# seed CNN ~5 s, 96.9-97.5 % test; small ResNet ~5 s, 98.9-99.7 %; small MobileNetV2 ~4 s, 97.2-98.6 %.
DIGITS_MODELS = ("seed_cnn", "small_resnet", "small_mobilenetv2", "small_senet")
DIGITS_RECIPES = {
    "seed_cnn": {"epochs": 6, "lr": 3e-3},
    "small_resnet": {"epochs": 5, "lr": 3e-3},
    "small_mobilenetv2": {"epochs": 5, "lr": 5e-3},
    "small_senet": {"epochs": 5, "lr": 3e-3},
}


def build(name, seed=0):
    """The model registered as `name`, initialised under torch.manual_seed(seed), in eval mode.

    The global torch RNG is left as it was.
    """
    if name not in MODELS:
        raise ValueError(f"name: unknown model {name!r}; known: {sorted(MODELS)}")
    constructor, _ = MODELS[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = constructor()
    return model.eval()


def load_digits_28(seed=0):
    """scikit-learn's handwritten digits as 1x28x28 images: (x_train, y_train, x_test, y_test).

    The 8x8 images (values 0..16) are divided by 16 to [0, 1] and upsampled to 28x28 with
    torch.nn.functional.interpolate(mode="bilinear", align_corners=False), which keeps them in [0, 1].
    x: float32 (N, 1, 28, 28); y: int64 (N,). The split is 80/20 (1437/360), stratified by label,
    shuffled with random_state=seed: the same seed always gives the same split.
    """
    from sklearn.datasets import load_digits          # only the digits need scikit-learn
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False).numpy()
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=seed)
    return (np.ascontiguousarray(x_train), y_train, np.ascontiguousarray(x_test), y_test)


def train(model, x_train, y_train, epochs, seed=0, batch_size=64, lr=1e-3, label_smoothing=0.1):
    """Train `model` in place with Adam and cross entropy; returns it in eval mode.

    The learning rate decays from `lr` to 0 along a cosine over all steps; label smoothing keeps
    the seed CNN (no normalisation, no dropout) from overfitting 1437 images.
    Deterministic for a given seed (and thread count): batches are drawn from a generator seeded
    with `seed`, and dropout from the torch RNG seeded with it inside a forked RNG state, so the
    caller's RNG state is untouched. x_train: float (N, C, H, W); y_train: integer labels (N,).
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs: expected a positive int, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    x = torch.as_tensor(x_train, dtype=torch.float32)
    y = torch.as_tensor(y_train, dtype=torch.int64)
    if len(x) != len(y):
        raise ValueError(f"y_train: {len(y)} labels for {len(x)} inputs in x_train")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * -(-len(x) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    shuffle = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=shuffle)
            for start in range(0, len(x), batch_size):
                batch = order[start:start + batch_size]
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x[batch]), y[batch], label_smoothing=label_smoothing)
                loss.backward()
                optimizer.step()
                schedule.step()
    return model.eval()


def train_digits(name, seed=0, data=None):
    """Build `name` (one of DIGITS_MODELS) with `seed` and train it on the digits with its recipe.

    data: the (x_train, y_train, x_test, y_test) of load_digits_28(seed), loaded when not given.
    Returns the model in eval mode.
    """
    if name not in DIGITS_RECIPES:
        raise ValueError(f"name: {name!r} has no digits recipe; known: {list(DIGITS_RECIPES)}")
    x_train, y_train, _, _ = data if data is not None else load_digits_28(seed)
    return train(build(name, seed), x_train, y_train, seed=seed, **DIGITS_RECIPES[name])


@torch.no_grad()
def accuracy(model, x, y, batch_size=512):
    """Top-1 accuracy of `model` on (x, y), in percent. The model is run as it is (call .eval() first)."""
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.int64)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"y: {len(y)} labels for {len(x)} inputs in x (need the same non-zero count)")
    correct = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(x), batch_size))
    return 100.0 * correct / len(x)
