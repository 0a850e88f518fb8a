"""dwfhpc: telescope-to-supercomputer transfer and calibration for the Deeper, Wider, Faster survey.

Telescope side: :mod:`.push` (watch, pack into :mod:`.parts`, send). Cluster side: :mod:`.ingest`
(inbox -> arrays or warm :mod:`.workers` through :mod:`.ingest.executors` and :mod:`.scheduler`),
:mod:`.node` (one CCD on a compute node: :mod:`.calibrate` or an image-based :mod:`.backends` step),
:mod:`.report` and :mod:`.ops` for the operators. Shared: :mod:`.config` (settings and their allowed
values), :mod:`.db` (SQLite base), :mod:`.state` (the state DB), :mod:`.states` (every state),
:mod:`.layout` (every file name), :mod:`.atomic`, :mod:`.locking`. :mod:`.cli` + :mod:`.commands`
are the ``dwfhpc`` command.
"""

__version__ = "0.1.0"
