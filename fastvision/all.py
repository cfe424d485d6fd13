"""Everything a user needs, for `from fastvision.all import *`. Star imports live here only."""

from pathlib import Path

from torchvision.models import (
    convnext_tiny,
    densenet121,
    efficientnet_b0,
    mobilenet_v3_large,
    regnet_y_400mf,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnext50_32x4d,
    vgg16_bn,
    vit_b_16,
    wide_resnet50_2,
)

from .callback.core import *
from .callback.fp16 import *
from .callback.hard import *
from .callback.loggers import *
from .callback.mixup import *
from .callback.progress import *
from .callback.recorder import *
from .callback.resume import *
from .callback.schedule import *
from .callback.tracker import *
from .compare import *
from .data.block import *
from .data.external import *
from .data.fashion_pets import *
from .data.items import *
from .data.load import *
from .distributed import *
from .export import *
from .interpret import *
from .learner import *
from .losses import *
from .metrics import *
from .onnx import *
from .optimizer import *
from .plots import *
from .testing import *
from .transform import *
from .utils import set_seed
from .vision.arch import *
from .vision.augment import *
from .vision.block import *
from .vision.data import *
from .vision.image import *
from .vision.learner import *
from .vision.lighting import *
from .vision.models import *
from .vision.resize import *
from .vision.sample import *
from .vision.show import *
