"""Tracking plugs in at the edge: a small Tracker protocol, a no-op default, and MLflow.

``adamtune.tracking.mlflow`` (MlflowTracker) imports mlflow only when it is used.
"""

from adamtune.tracking.base import NullTracker, Tracker, TrialRecord, default_tracking_uri

__all__ = ["NullTracker", "Tracker", "TrialRecord", "default_tracking_uri", "make_tracker"]


def make_tracker(
    tracking_uri: str | None, experiment: str | None = None, storage_url: str | None = None
) -> Tracker:
    """No tracking when ``tracking_uri`` is None; else an MlflowTracker whose worker process
    starts now, so that MLflow's import overlaps the caller's own set-up."""
    if tracking_uri is None:
        return NullTracker()
    from adamtune.tracking.mlflow_tracker import MlflowTracker

    tracker = MlflowTracker(tracking_uri, experiment, storage_url)
    tracker.launch()
    return tracker
