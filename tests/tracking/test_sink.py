"""MlflowSink's requests, seen through a recording stand-in for MlflowClient."""

from types import SimpleNamespace

from adamtune.tracking.sink import MlflowSink
from adamtune.tracking.sql_metrics import MAX_PER_REQUEST


class RecordingClient:
    def __init__(self) -> None:
        self.batches: list[dict] = []
        self.terminated: list[tuple[str, str]] = []

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        self.batches.append({"metrics": list(metrics), "params": list(params), "tags": list(tags)})

    def set_terminated(self, run_id, status, end_time=None):
        self.terminated.append((run_id, status))

    def create_run(self, experiment_id, start_time=None, run_name=None, tags=None):
        return SimpleNamespace(info=SimpleNamespace(run_id=run_name))


def end_trial(steps: int, params: int = 12, reason: str = "") -> RecordingClient:
    sink = MlflowSink()
    sink.client = RecordingClient()
    sink.start_trial(3, started_ms=0)
    sink.end_trial(
        number=3,
        state="PRUNED" if reason else "COMPLETE",
        reason=reason,
        params={f"p{i}": str(i) for i in range(params)},
        value=None if reason else 0.5,
        learning_rates=[1e-3] * steps,
        train_losses=[1.0] * steps,
        evaluations=[[0, steps - 1, {"val_loss": 0.4, "train_loss": 0.9}]],
        ended_ms=1,
    )
    return sink.client


def test_a_default_sized_trial_is_two_requests_to_a_store_that_is_not_sql():
    client = end_trial(steps=460)
    assert len(client.batches) == 2
    meta, values = client.batches
    assert len(meta["params"]) == 12 and len(meta["tags"]) == 1 and not meta["metrics"]
    assert len(values["metrics"]) == 2 * 460 + 2 + 1  # lr, train_loss; val_loss, epoch; objective
    assert client.terminated == [("trial-3", "FINISHED")]


def test_long_trials_are_split_within_mlflows_limit_and_lose_nothing():
    client = end_trial(steps=1700, params=40, reason="diverged")
    sizes = [sum(len(b[k]) for k in ("metrics", "params", "tags")) for b in client.batches]
    assert all(size <= MAX_PER_REQUEST for size in sizes)
    metrics = [m for b in client.batches for m in b["metrics"]]
    assert len(metrics) == 2 * 1700 + 2
    lr_steps = [m.step for m in metrics if m.key == "lr"]
    assert lr_steps == list(range(1700))
    assert [t.key for b in client.batches for t in b["tags"]] == [
        "adamtune.trial_state",
        "adamtune.reason",
    ]
    assert client.terminated == [("trial-3", "KILLED")]
