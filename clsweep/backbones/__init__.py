"""Backbone networks: the feature extractors that continual-learning heads read.

:class:`CLBackbone` is the contract every backbone follows; :class:`HATMaskBackbone` adds the
task masks that HAT and AdaHAT need. Concrete networks are registered by name in
``clsweep/spec/components.py`` and built through the registry. Importing this package imports
torch, and nothing else happens at import time.
"""

from __future__ import annotations

from clsweep.backbones.alexnet import AlexNet, HATMaskAlexNet
from clsweep.backbones.base import STAGES, CLBackbone
from clsweep.backbones.hat import AGGREGATIONS, INIT_MODES, HATMaskBackbone, LayerInput, apply_gate
from clsweep.backbones.mlp import MLP, HATMaskMLP
from clsweep.backbones.resnet import (
    HATMaskResNet18,
    HATMaskResNet34,
    HATMaskResNet50,
    HATMaskResNet101,
    HATMaskResNet152,
    ResNet18,
    ResNet34,
    ResNet50,
    ResNet101,
    ResNet152,
)
from clsweep.backbones.task_norm import TaskBatchNorm2d

__all__ = [
    "AGGREGATIONS",
    "INIT_MODES",
    "MLP",
    "STAGES",
    "AlexNet",
    "CLBackbone",
    "HATMaskAlexNet",
    "HATMaskBackbone",
    "HATMaskMLP",
    "HATMaskResNet18",
    "HATMaskResNet34",
    "HATMaskResNet50",
    "HATMaskResNet101",
    "HATMaskResNet152",
    "LayerInput",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNet101",
    "ResNet152",
    "TaskBatchNorm2d",
    "apply_gate",
]
