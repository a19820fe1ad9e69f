"""kd_zoo: knowledge distillation with Label Revision and Data Selection, as timm models and Accelerate recipes.

Importing the package registers the CIFAR zoo in timm (`timm.create_model('lrds_resnet8x4')`).
"""

from . import models
from .loading import create_model, list_models, load_model, weights_fingerprint
from .version import __version__

__all__ = ["__version__", "create_model", "list_models", "load_model", "models", "weights_fingerprint"]
