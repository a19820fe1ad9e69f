"""Constants shared across kd_zoo: one place for normalisation, column names and the Hub organisation."""

# Hugging Face Hub organisation that hosts the zoo's weights and score sets.
HF_ORG = "kd-zoo"

# Every kd_zoo architecture is registered in timm as MODEL_PREFIX + <arch> (`lrds_resnet8x4`).
MODEL_PREFIX = "lrds_"

# CIFAR-100 normalisation of the CRD / RepDistiller recipes (shared/reference/architectures.md).
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)

# ImageNet normalisation (torchvision / timm default).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The one schema every data set is mapped to, and the key scores and masks are joined on.
IMAGE_COLUMN = "image"
LABEL_COLUMN = "label"
INDEX_COLUMN = "sample_idx"
SCORE_COLUMN = "score"

# The data layer (kd_zoo.data): where its caches live, and the names a recipe may give instead of a path.
KD_ZOO_CACHE_ENV = "KD_ZOO_CACHE"  # environment variable that overrides the cache folder
DEFAULT_CACHE_DIR = "~/.cache/kd_zoo"
DEMO_DATASET = "demo"  # scikit-learn's digits as 32x32 RGB: the offline default of every recipe
CIFAR100_HUB_ID = "uoft-cs/cifar100"
IMAGENET_HUB_ID = "ILSVRC/imagenet-1k"

# Score sets of Data Selection (kd_zoo.selection): the columns besides sample_idx, score and label.
TEACHER_PRED_COLUMN = "teacher_pred"
TEACHER_CORRECT_COLUMN = "teacher_correct"
