"""kd_zoo.selection: Data Selection scores for every training sample, the selection strategies, and score sets.

"Improve Knowledge Distillation via Label Revision and Data Selection" (Lan et al., arXiv 2404.03693), Sec. III-A
and Table II: the samples with the higher influence scores are distilled from the teacher (Dt, 80 % by default),
the rest are trained on their labels only (Ds).

* `teacher_pass`: `score_dataset(teacher, train)`: one pass of the frozen teacher, sharded with Accelerate, ->
  a `ScoreSet` (`score_dataset_multi` for several scorers from the same pass; `ScoringPass` for any other loop
  that runs the teacher).
* `scorers`: `SCORERS`, `influence` (EK-FAC self-influence of the classifier layer, the default),
  `influence_exact` (the explicit damped Hessian, small heads), `influence_val`, `loss`, `el2n`, `grad_norm`,
  `random`; `influence_math` holds their closed-form math, `head_inputs` what they read.
* `influence_full`: the scorer `influence_full` (`FullInfluence`), the self-influence over every Linear and Conv2d
  weight of the teacher (EK-FAC by kronfluence, the optional extra `pip install "kd-zoo[influence]"`), a
  whole-model scorer that `ScoringPass.fit_model_scorers` hands the teacher and the loader.
* `strategies`: `select(scores, sample_idx, fraction=0.8, strategy="highest")`, the one selection function
  (`STRATEGIES`: highest, lowest, random), deterministic.
* `score_set`: `ScoreSet`, a `datasets.Dataset` of (sample_idx, score, teacher_pred, teacher_correct, label) with
  the teacher's and the data's fingerprints; `ScoreSet.load` and `join(train, teacher)` with checks, giving
  `AlignedScores.distill_mask(...)`. `kd_zoo.hub.export_scores` writes the Hub-ready folder.

Example:
    >>> from kd_zoo import load_model
    >>> from kd_zoo.data import load_tensor_split
    >>> from kd_zoo.hub import export_scores
    >>> from kd_zoo.selection import ScoreSet, score_dataset
    >>> train = load_tensor_split(None, "train")
    >>> teacher = load_model("lrds_resnet8", "teacher.safetensors")  # doctest: +SKIP
    >>> export_scores(score_dataset(teacher, train), "scores/")  # doctest: +SKIP
    >>> mask = ScoreSet.load("scores/").join(train, teacher).distill_mask(0.8)  # doctest: +SKIP
"""

from .comm import Comm
from .errors import ScoreSetError, ScoreSetFormatError, ScoreSetIndexError, TeacherMismatchError
from .head_inputs import HeadChunk, HeadStore
from .influence_full import FullInfluence
from .influence_math import (
    classifier_hvp,
    ekfac_self_influence,
    exact_self_influence,
    hessian_sum,
    per_sample_gradients,
    resolve_damping,
)
from .score_set import FORMAT, AlignedScores, ScoreSet
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
    score_head_inputs,
)
from .strategies import (
    DEFAULT_FRACTION,
    DEFAULT_STRATEGY,
    STRATEGIES,
    mask_by_index,
    mistakes_report,
    num_selected,
    select,
)
from .teacher_pass import (
    ScoringPass,
    SplitInfo,
    TeacherInfo,
    classifier_layer,
    score_batches,
    score_dataset,
    score_dataset_multi,
)

__all__ = [
    "DEFAULT_DAMPING_RATIO",
    "DEFAULT_FRACTION",
    "DEFAULT_SCORER",
    "DEFAULT_STRATEGY",
    "FORMAT",
    "SCORERS",
    "STRATEGIES",
    "AlignedScores",
    "Comm",
    "EKFACInfluence",
    "EKFACValidationInfluence",
    "ExactInfluence",
    "FullInfluence",
    "HeadChunk",
    "HeadStore",
    "ScoreSet",
    "ScoreSetError",
    "ScoreSetFormatError",
    "ScoreSetIndexError",
    "Scorer",
    "ScoringContext",
    "ScoringPass",
    "SplitInfo",
    "TeacherInfo",
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
    "score_dataset_multi",
    "score_head_inputs",
    "select",
]
