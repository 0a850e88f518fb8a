"""Warm workers: long-lived scheduler tasks that run CCD tasks one after another.

``queue``    the shared-FS work queue between ingest and the workers (tickets, atomic claims,
             heartbeats, drain requests, masters generation)
``preload``  a worker's node-local copies of masters, bad-pixel masks and reference catalog
``worker``   the worker loop that submitit (or a template) runs in each task of a worker array
``settings`` the workers' settings (scratch, stop margin) in ``<queue root>/settings.json``, written by ingest
"""

from .queue import Ticket, WorkerBeat, WorkQueue
from .settings import WorkerSettings

__all__ = ["Ticket", "WorkQueue", "WorkerBeat", "WorkerSettings"]
