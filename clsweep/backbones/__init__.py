"""Backbone networks: the feature extractors that continual-learning heads read.

:class:`CLBackbone` is the contract every backbone follows; :class:`HATMaskBackbone` adds the
task masks that HAT and AdaHAT need. Concrete networks are registered by name in
``clsweep/spec/components.py`` and built through the registry
(``registry.create("backbone", name, input_shape, **hyperparameters)``). Importing this package imports
torch, and nothing else happens at import time.
"""

from __future__ import annotations

from clsweep.backbones.alexnet import AlexNet, HATMaskAlexNet
from clsweep.backbones.base import STAGES, CLBackbone
from clsweep.backbones.hat import AGGREGATIONS, INIT_MODES, HATMaskBackbone, LayerInput, apply_gate
from clsweep.backbones.mlp import MLP, HATMaskMLP
from clsweep.backbones.resnet import HATMaskResNet, ResNet
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
    "HATMaskResNet",
    "LayerInput",
    "ResNet",
    "TaskBatchNorm2d",
    "apply_gate",
]
