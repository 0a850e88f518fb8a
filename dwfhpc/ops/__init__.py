"""Operator tools (the seed's convenience scripts), from products and the state DB, not from logs.

``reprocess`` (run CCDs again, through one :meth:`dwfhpc.ingest.Ingest.run` pass), ``fullred`` (a full
hscPipe reduction of an HSC visit), ``jobs`` (our tasks in the queue), ``qa_index`` (QA per exposure),
``lookup`` (an exposure by expid or number, for all of them).
"""
