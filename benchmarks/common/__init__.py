"""Helpers shared by the benchmarks: a private Slurm (``slurm``), the emulated WAN (``wan``), report tables and
load sampling (``tables``), process helpers (``procs``), worker-mode derivations (``warm``).

The benchmarks run as scripts (``python3 benchmarks/<name>.py``): ``benchmarks/`` is then first on ``sys.path`` and
they import ``common.<module>``; the modules here import each other relatively.
"""
