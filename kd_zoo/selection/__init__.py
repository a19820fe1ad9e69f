"""kd_zoo.selection: Data Selection scores for every training sample, a selector, and score sets on disk.

"Improve Knowledge Distillation via Label Revision and Data Selection" (Lan et al., arXiv 2404.03693), Sec. III-A
and Table II: the samples with the higher influence scores are distilled from the teacher (Dt, 80 % by default),
the rest are trained on their labels only (Ds).

* `score_dataset(teacher, train, "influence")`: one pass of the frozen teacher, sharded with Accelerate, ->
  a `ScoreSet`. Scorers (`SCORERS`): `influence` (EK-FAC self-influence of the classifier layer, the default),
  `influence_exact` (the explicit damped Hessian, small heads), `influence_val`, `loss`, `el2n`, `grad_norm`,
  `random`.
* `select(scores, sample_idx, fraction=0.8, strategy="highest")`: the boolean distill mask (`SELECTORS`:
  highest, lowest, random), deterministic.
* `ScoreSet`: a `datasets.Dataset` of (sample_idx, score, teacher_pred, teacher_correct, label) with the teacher's
  and the data's fingerprints; `save` / `load` (Hub-ready parquet folder) and `join(train)` with checks.

Example:
    >>> from kd_zoo.checkpoints import load_model
    >>> from kd_zoo.data import load_tensor_split
    >>> from kd_zoo.selection import ScoreSet, score_dataset
    >>> train = load_tensor_split(None, "train")
    >>> teacher = load_model("lrds_resnet8", "teacher.safetensors")  # doctest: +SKIP
    >>> scores = score_dataset(teacher, train)  # doctest: +SKIP
    >>> scores.save("scores/")  # doctest: +SKIP
    >>> mask = ScoreSet.load("scores/").join(train, teacher).distill_mask(0.8)  # doctest: +SKIP
"""

from .comm import Comm
from .errors import ScoreSetError, ScoreSetFormatError, ScoreSetIndexError, TeacherMismatchError
from .hessian import (
    classifier_hvp,
    ekfac_self_influence,
    exact_self_influence,
    hessian_sum,
    per_sample_gradients,
    resolve_damping,
)
from .scorers import (
    DEFAULT_DAMPING_RATIO,
    DEFAULT_SCORER,
    SCORERS,
    EKFACInfluence,
    EKFACValidationInfluence,
    ExactInfluence,
    Scorer,
    ScoringContext,
    make_scorer,
    scorer_names,
)
from .scoreset import FORMAT, AlignedScores, ScoreSet
from .scoring import classifier_layer, score_batches, score_dataset, score_head_inputs
from .selector import (
    DEFAULT_FRACTION,
    DEFAULT_STRATEGY,
    SELECTORS,
    mask_by_index,
    mistakes_report,
    num_selected,
    select,
)
from .store import HeadChunk, HeadStore

__all__ = [
    "DEFAULT_DAMPING_RATIO",
    "DEFAULT_FRACTION",
    "DEFAULT_SCORER",
    "DEFAULT_STRATEGY",
    "FORMAT",
    "SCORERS",
    "SELECTORS",
    "AlignedScores",
    "Comm",
    "EKFACInfluence",
    "EKFACValidationInfluence",
    "ExactInfluence",
    "HeadChunk",
    "HeadStore",
    "ScoreSet",
    "ScoreSetError",
    "ScoreSetFormatError",
    "ScoreSetIndexError",
    "Scorer",
    "ScoringContext",
    "TeacherMismatchError",
    "classifier_hvp",
    "classifier_layer",
    "ekfac_self_influence",
    "exact_self_influence",
    "hessian_sum",
    "make_scorer",
    "mask_by_index",
    "mistakes_report",
    "num_selected",
    "per_sample_gradients",
    "resolve_damping",
    "score_batches",
    "score_dataset",
    "score_head_inputs",
    "scorer_names",
    "select",
]
