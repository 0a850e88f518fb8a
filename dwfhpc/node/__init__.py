"""What runs on a compute node: one CCD of one part, staged through node-local scratch.

``spec`` (the task spec; defaults and copied settings from :mod:`dwfhpc.config`), ``stage`` (member ->
scratch, verified, decompressed), ``scratch``, ``crosscheck`` (header vs manifest), ``run`` (calibrate or
file a calibration frame, :func:`copy_back` the products), ``result`` (:class:`TaskResult`), ``calfiling``.
"""

from .calfiling import file_calibration_frame
from .result import ErrorKind, ResultError, TaskResult, TaskStatus
from .run import (STAGES, array_task, copy_back, find_masters, index_from_environment, run_spec, run_spec_result,
                  run_task, write_result)
from .scratch import ScratchError, TaskInterrupted, check_space, scratch_root, task_scratch
from .spec import SCHEMA, TaskSpec, result_path, task_index
from .stage import StagedCCD, scratch_needed, stage_ccd

__all__ = ["SCHEMA", "STAGES", "TaskSpec", "result_path", "task_index", "run_task", "array_task", "run_spec",
           "run_spec_result", "write_result", "TaskResult", "TaskStatus", "ErrorKind", "ResultError",
           "index_from_environment", "copy_back", "find_masters", "file_calibration_frame", "ScratchError",
           "TaskInterrupted", "check_space", "scratch_root", "task_scratch", "StagedCCD", "scratch_needed", "stage_ccd"]
