"""``night.py --faults``: the fault campaign (issue 15 item 2).

* :mod:`.registry`: the faults, one class each with its schedule, injection and analysis (:mod:`.delivery`,
  :mod:`.cluster`, on :class:`.base.Fault`; with ``--workers N`` (issue 25 item 5) also the warm workers' own:
  :mod:`.warm` (a worker killed, walltime rolls, the worker array cancelled) and :mod:`.reload` (new masters
  mid-night, the scratch full under preloaded masters));
* :mod:`.campaign`: the night with the faults injected; :mod:`.evidence`: what the analysis reads;
* :mod:`.report`: the table, the required outcome, the saved campaign (``--reanalyse``); :mod:`.driver`: set-up
  (WAN, private Slurm, scratch tmpfs, site) and tear-down.
"""
