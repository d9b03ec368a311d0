"""Tracking plugs in at the edge: a small Tracker protocol, a no-op default, and MLflow.

``adamtune.tracking.mlflow`` (MlflowTracker) imports mlflow only when it is used.
"""

from adamtune.tracking.base import NullTracker, Tracker, TrialRecord, default_tracking_uri

__all__ = ["NullTracker", "Tracker", "TrialRecord", "default_tracking_uri"]
