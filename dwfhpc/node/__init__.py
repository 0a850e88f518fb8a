"""What runs on a compute node: one CCD of one part, staged through node-local scratch."""

from .run import index_from_environment, run_task
from .spec import TaskSpec, result_path

__all__ = ["TaskSpec", "result_path", "run_task", "index_from_environment"]
