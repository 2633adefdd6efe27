"""One command from a model to a shipped compressed variant: stages chained by a YAML, a record per stage
(skipped when unchanged, resumed when interrupted), a student search under a latency budget, one report."""

from .config import load_pipeline_config
from .run import run_pipeline
from .settings import PipelineArguments, PipelineConfig
from .stages.evaluate import EvaluateConfig
from .stages.search import SearchConfig
from .stages.share import ShareConfig
from .student_search import search_student

__all__ = [
    "EvaluateConfig",
    "PipelineArguments",
    "PipelineConfig",
    "SearchConfig",
    "ShareConfig",
    "load_pipeline_config",
    "run_pipeline",
    "search_student",
]
