"""The Hugging Face Hub: export models and score sets as folders that are exactly their Hub repos, and publish them.

`privacy` (what must never be published), `cards` (model and data set cards from `model_cards/`), `export`
(model, score set and run folders), `publish` (one `create_repo` + `upload_folder` per repo), `runs` (finished
runs found under a folder) and `tables` (the zoo's results table from their cards).
"""

from .cards import (
    PAPER_CITATION,
    CardTemplateError,
    imported_card_fields,
    model_card,
    render_template,
    run_card_fields,
    score_set_card,
    scores_repo_name,
    scores_usage_snippet,
    template_text,
    usage_snippet,
)
from .export import MODEL_FILES, export_model, export_run, export_scores, file_sha256
from .privacy import (
    find_private_content,
    public_config,
    public_dataset_name,
    public_metadata,
    public_path,
    public_weights,
)
from .publish import PublishError, Upload, plan_uploads, publish_folder, publish_runs, resolve_token
from .runs import FinishedRuns, ModelResult, RunFolderError, ScoreSetFolder, collect_runs, read_model
from .tables import readme_section, replace_section, results_table, table_texts, write_tables

__all__ = [
    "MODEL_FILES",
    "PAPER_CITATION",
    "CardTemplateError",
    "FinishedRuns",
    "ModelResult",
    "PublishError",
    "RunFolderError",
    "ScoreSetFolder",
    "Upload",
    "collect_runs",
    "export_model",
    "export_run",
    "export_scores",
    "file_sha256",
    "find_private_content",
    "imported_card_fields",
    "model_card",
    "plan_uploads",
    "public_config",
    "public_dataset_name",
    "public_metadata",
    "public_path",
    "public_weights",
    "publish_folder",
    "publish_runs",
    "read_model",
    "readme_section",
    "render_template",
    "replace_section",
    "resolve_token",
    "results_table",
    "run_card_fields",
    "score_set_card",
    "scores_repo_name",
    "scores_usage_snippet",
    "table_texts",
    "template_text",
    "usage_snippet",
    "write_tables",
]
