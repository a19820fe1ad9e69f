"""kd_zoo: knowledge distillation with Label Revision and Data Selection, as timm models and Accelerate recipes.

Importing the package registers the CIFAR zoo in timm (`timm.create_model('lrds_resnet8x4')`).
"""

from . import models, zoo
from .factory import create_model, list_models

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models", "models", "zoo"]
