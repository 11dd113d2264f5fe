"""A separate package's network, registered through the `framework` entry-point group."""
import torch
from torch import nn

from framework.hookspecs import hookimpl
from plugins.models.base import TorchModulePlugin


class TinyNet(nn.Module):
    """Two conv stages, global pooling and a 10-way linear read-out (not torchvision, not timm)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.conv2(self.conv1(x))), 1))


class TinyNetPlugin(TorchModulePlugin):
    """TinyNet with its default layers and preprocessing declared as data."""

    default_layer_map = {"conv1": "conv1", "conv2": "conv2", "logits": "fc"}
    input_size = 64
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def build_module(self):
        return TinyNet()


@hookimpl
def framework_register_models(registry):
    registry.add_model("tinynet", TinyNetPlugin, "TinyNet: a small CNN from a separate package")


@hookimpl
def framework_register_benchmarks(registry):
    # A benchmark is data: the built-in Benchmark class with this package's choice of dataset, signal and metric.
    registry.declare("benchmark", "tinylab.demo-theta-rsa", "framework.benchmarks:Benchmark",
                     "Example third-party benchmark: RSA of theta power 150-350 ms on a small demo dataset",
                     params={"dataset": "demo", "dataset_params": {"n_images_per_category": 4, "n_subjects": 2},
                             "signal": "theta@150-350", "metric": "rsa", "metric_params": {"selection": "optimistic"},
                             "normalize": "none",
                             "reference": "framework test suite"})
