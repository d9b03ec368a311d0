"""MlflowSink: the MLflow side of tracking, run inside the worker process (see worker.py).

Layout: one experiment per study (kind "custom_model_development", so MLflow 3's UI opens it
on the runs table), a parent run per study invocation, a child run per trial named
``trial-<n>``. Child status: FINISHED (complete), KILLED (pruned), FAILED; tags
``adamtune.study``, ``adamtune.trial_number``, ``adamtune.trial_state`` and ``adamtune.reason``;
every run of one invocation also carries ``adamtune.session``, so that runs a dead logging
process left RUNNING can be found and closed by a fresh one (``close_session``).
"""

from __future__ import annotations

import logging
from typing import Any

from adamtune.tracking.sql_metrics import log_metrics
from adamtune.tracking.store_setup import open_client

STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


class MlflowSink:
    def __init__(self) -> None:
        self.client: Any = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.study_name = ""
        self.runs: dict[int, str] = {}  # trial number -> run id
        self.grad_norms: dict[int, list[float]] = {}  # trial number -> its per-step norms
        self.open: set[str] = set()
        self.session = ""  # tags every run of this invocation
        self.ended = False  # end_study arrived: the search closed down cleanly
        self.storage_url: str | None = None  # the Optuna storage the summary reads
        self._storage: Any = None  # ... opened ahead by prepare_summary

    def prepare_summary(self) -> None:
        """Open the Optuna storage now, not after the last trial (while the user waits)."""
        if self.storage_url and self._storage is None:
            from adamtune.storage.store import open_storage

            self._storage = open_storage(self.storage_url)

    def start_study(
        self,
        tracking_uri: str,
        experiment: str | None,
        study_name: str,
        settings: dict[str, Any],
        space_text: str,
        storage_url: str | None,
        started_ms: int,
        session: str = "",
    ) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        for name in ("mlflow", "alembic"):  # store set-up chatters at INFO; set after import,
            logging.getLogger(name).setLevel(logging.WARNING)  # which configures mlflow's logger

        self.client = open_client(tracking_uri, MlflowClient)
        self.study_name = study_name
        self.storage_url = storage_url
        self.session = session
        self.experiment_id = self._experiment_id(experiment or study_name)
        run = self.client.create_run(
            self.experiment_id,
            start_time=started_ms,
            run_name=study_name,
            tags={
                "adamtune.study": study_name,
                "adamtune.role": "study",
                "adamtune.session": session,
            },
        )
        self.parent_run_id = run.info.run_id
        self.open.add(self.parent_run_id)
        self.client.log_batch(
            self.parent_run_id, params=[Param(k, str(v)) for k, v in settings.items()]
        )
        self.client.log_text(self.parent_run_id, space_text, "search_space.yaml")

    def _experiment_id(self, name: str) -> str:
        existing = self.client.get_experiment_by_name(name)
        if existing is None:
            try:
                return self.client.create_experiment(name, tags=EXPERIMENT_TAGS)
            except Exception:  # another worker created it in between
                existing = self.client.get_experiment_by_name(name)
                if existing is None:
                    raise
        for key, value in EXPERIMENT_TAGS.items():
            if key not in existing.tags:
                self.client.set_experiment_tag(existing.experiment_id, key, value)
        return existing.experiment_id

    def start_trial(self, number: int, started_ms: int) -> None:
        tags = {
            "adamtune.study": self.study_name,
            "adamtune.trial_number": str(number),
            "adamtune.session": self.session,
            "mlflow.parentRunId": self.parent_run_id,
        }
        run = self.client.create_run(
            self.experiment_id, start_time=started_ms, run_name=f"trial-{number}", tags=tags
        )
        self.runs[number] = run.info.run_id
        self.open.add(run.info.run_id)

    def end_trial(self, number: int, **record: Any) -> None:
        """Trial ``number`` ended: its record (see ``_log_record``) into its run."""
        self.grad_norms[number] = record.get("grad_norms") or []  # for the top trials' plot
        self._log_record(self.runs[number], **record)

    def log_run(self, name: str, started_ms: int, number: int, **record: Any) -> None:
        """A finished run that is no trial (a separate baseline, a confirmation seed), as a
        child of the parent run, tagged ``adamtune.role`` = its params' ``role``."""
        tags = {
            "adamtune.study": self.study_name,
            "adamtune.role": record["params"].get("role", "evaluation"),
            "adamtune.session": self.session,
            "mlflow.parentRunId": self.parent_run_id,
        }
        if number >= 0:  # not adamtune.trial_number: that tag marks the trial's own run
            tags["adamtune.confirms_trial"] = str(number)
        run = self.client.create_run(
            self.experiment_id, start_time=started_ms, run_name=name, tags=tags
        )
        self.open.add(run.info.run_id)
        self._log_record(run.info.run_id, **record)

    def _log_record(
        self,
        run_id: str,
        state: str,
        reason: str,
        params: dict[str, str],
        value: float | None,
        learning_rates: list[float],
        train_losses: list[float],
        evaluations: list[list[Any]],
        ended_ms: int,
        grad_norms: list[float] | None = None,
        step_metrics: list[list[Any]] | None = None,
        final_metrics: dict[str, float] | None = None,
        hyperparameters: dict[str, list[float]] | None = None,
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        grad_norms = grad_norms or []
        now = ended_ms
        metrics = [Metric("lr", lr, now, step) for step, lr in enumerate(learning_rates)]
        metrics += [Metric("train_loss", loss, now, step) for step, loss in enumerate(train_losses)]
        for name, series in (hyperparameters or {}).items():  # a population member's schedule
            metrics += [Metric(name, v, now, step) for step, v in enumerate(series)]
        if "max_grad_norm" in params:  # the trial clips: the norm clipping acted on, every step
            metrics += [Metric("grad_norm", g, now, step) for step, g in enumerate(grad_norms)]
        previous = 0
        for epoch, step, values in evaluations:
            metrics += [Metric(k, v, now, step) for k, v in values.items() if k != "train_loss"]
            metrics.append(Metric("epoch", epoch, now, step))
            # Every trial: the epoch's mean and largest gradient norm. A third per-step series
            # for every trial made tracking cost 1.30x (benchmarks/results/tracking_overhead_cpu.md).
            norms = grad_norms[previous:step]
            if norms:
                metrics.append(Metric("grad_norm_mean", sum(norms) / len(norms), now, step))
                metrics.append(Metric("grad_norm_max", max(norms), now, step))
            previous = step
        for step, values in step_metrics or []:  # a user loop's trial.log(step, name=value)
            metrics += [Metric(k, v, now, step) for k, v in values.items()]
        last = evaluations[-1][1] if evaluations else 0  # a run with no evaluation
        logged = {m.key for m in metrics}
        for key, final in (final_metrics or {}).items():  # the test split's, at the last step
            if key not in logged and key != "train_loss":
                metrics.append(Metric(key, final, now, last))
        if value is not None:
            metrics.append(Metric("objective", value, now, len(learning_rates) or last))
        tags = [RunTag("adamtune.trial_state", state)]
        if reason:
            tags.append(RunTag("adamtune.reason", reason[:5000]))
        logged_params = [Param(k, v) for k, v in params.items()]
        self.client.log_batch(run_id, params=logged_params, tags=tags)
        log_metrics(self.client, run_id, metrics)  # one bulk insert into a SQL store
        self.client.set_terminated(run_id, STATUS[state], end_time=ended_ms)
        self.open.discard(run_id)

    def stale_trial(self, number: int, ended_ms: int) -> None:
        """Another worker's trial ``number`` was found dead (no heartbeat): close its run as
        FAILED, whether it is still RUNNING or was closed as KILLED by its dying logger."""
        from mlflow.entities import RunTag

        reason = "the worker running this trial stopped (no heartbeat); the trial is retried"
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`adamtune.trial_number` = '{int(number)}'",
            max_results=100,
        )
        for run in runs:
            tags = run.data.tags
            if tags.get("adamtune.study") != self.study_name or run.info.status == "FINISHED":
                continue
            self.client.log_batch(
                run.info.run_id,
                tags=[RunTag("adamtune.trial_state", "FAIL"), RunTag("adamtune.reason", reason)],
            )
            self.client.set_terminated(run.info.run_id, "FAILED", end_time=ended_ms)

    def close_session(self, tracking_uri: str, experiment: str, session: str) -> None:
        """Close the runs of invocation ``session`` left RUNNING by a logging process that
        died: its trials FAILED, its parent run KILLED."""
        from mlflow import MlflowClient
        from mlflow.entities import RunTag

        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.client = open_client(tracking_uri, MlflowClient)
        found = self.client.get_experiment_by_name(experiment)
        if found is None or not session.isalnum():
            return
        runs = self.client.search_runs(
            [found.experiment_id],
            filter_string=f"tags.`adamtune.session` = '{session}' and attributes.status = 'RUNNING'",
            max_results=10000,
        )
        for run in runs:
            if run.data.tags.get("adamtune.role") == "study":
                self.client.set_terminated(run.info.run_id, "KILLED")
                continue
            tags = [
                RunTag("adamtune.trial_state", "FAIL"),
                RunTag("adamtune.reason", "the MLflow logging process stopped during the trial"),
            ]
            self.client.log_batch(run.info.run_id, tags=tags)
            self.client.set_terminated(run.info.run_id, "FAILED")

    def end_study(self, study_name: str, interrupted: bool, ended_ms: int) -> None:
        self.ended = True
        if self.parent_run_id is None:
            return
        if self.storage_url:
            self._summarise(study_name, ended_ms)
        self.client.set_terminated(
            self.parent_run_id, "KILLED" if interrupted else "FINISHED", end_time=ended_ms
        )
        self.open.discard(self.parent_run_id)

    def _summarise(self, study_name: str, now: int) -> None:
        import optuna
        from mlflow.entities import Metric, Param, RunTag
        from optuna.trial import TrialState

        from adamtune.results.export import render
        from adamtune.results.gain import summary_metrics
        from adamtune.results.report import config_rows
        from adamtune.results.studies import exported_trial, maximizes, trial_config
        from adamtune.tracking.plots import study_figures

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.prepare_summary()
        study = optuna.load_study(study_name=study_name, storage=self._storage)
        trials = study.get_trials(deepcopy=False)
        counts = {
            s: sum(t.state == s for t in trials)
            for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        }
        metrics = [Metric(f"n_trials_{s.name.lower()}", n, now, 0) for s, n in counts.items()]
        run_id = self.parent_run_id
        if not counts[TrialState.COMPLETE]:
            self.client.log_batch(run_id, metrics=metrics)
            return
        best = study.best_trial
        metrics.append(Metric("best_value", float(best.value or 0.0), now, 0))
        gains = summary_metrics(study.user_attrs, best.value, maximizes(study))
        metrics += [Metric(name, value, now, 0) for name, value in gains.items()]
        params = [Param(f"best.{k}", str(v)) for k, v in config_rows(trial_config(best))]
        best_trial = exported_trial(study)  # the confirmed winner where there is one
        metric_name = str(study.user_attrs.get("metric", "value"))
        self.client.log_batch(
            run_id,
            metrics=metrics,
            params=params,
            tags=[
                RunTag("adamtune.best_trial", str(best.number)),
                RunTag("adamtune.exported_trial", str(best_trial.trial_number)),
                # the run's description in the MLflow UI: the answer, on the page that opens
                RunTag("mlflow.note.content", _description(study, best, best_trial, metric_name)),
            ],
        )
        # the experiment's description too: the experiments list shows it beside the study
        self.client.set_experiment_tag(
            self.experiment_id,
            "mlflow.note.content",
            _description(study, best, best_trial, metric_name),
        )
        for fmt, name in (("torch", "best_config_torch.py"), ("yaml", "best_config.yaml")):
            self.client.log_text(run_id, render(best_trial, fmt), f"export/{name}")
        metric = study.user_attrs.get("metric", "value")
        figures = study_figures(study, metric, self.grad_norms, best_trial.trial_number)
        for path, figure in figures.items():
            self.client.log_figure(run_id, figure, path)
        lineage = {  # a population's (--strategy pbt): who copied whom, and when
            str(t.number): {
                "value": t.value,
                "anchor": t.user_attrs.get("anchor"),
                "lineage": t.user_attrs["lineage"],
                "trajectory": t.user_attrs.get("trajectory"),
            }
            for t in trials
            if "lineage" in t.user_attrs
        }
        if lineage:
            self.client.log_dict(run_id, lineage, "population/lineage.json")

    def kill_open_runs(self) -> None:
        """Close every run still open: the parent KILLED; a trial KILLED after a clean end of
        the study, FAILED when the search process died in the middle of it."""
        from mlflow.entities import RunTag

        for run_id in list(self.open):
            if run_id == self.parent_run_id or self.ended:
                self.client.set_terminated(run_id, "KILLED")
            else:
                reason = "the search process stopped during the trial"
                self.client.log_batch(
                    run_id,
                    tags=[
                        RunTag("adamtune.trial_state", "FAIL"),
                        RunTag("adamtune.reason", reason),
                    ],
                )
                self.client.set_terminated(run_id, "FAILED")
            self.open.discard(run_id)


def _description(study: Any, best: Any, exported: Any, metric: str) -> str:
    """The parent run's description (Markdown in the MLflow UI): the best trial, the gain over
    the baseline, the confirmed means with the noise verdict, and which trial is exported."""
    from adamtune.results.report import gain_report
    from adamtune.results.studies import maximizes

    lines = [
        f"**adamtune study {study.study_name!r}**: best trial {best.number}, "
        f"{metric} = {best.value:.6g}; `adamtune export` exports trial {exported.trial_number} "
        f"({exported.chosen}).",
        "",
    ]
    report = gain_report(study.user_attrs, best, metric, maximizes(study))
    return "\n".join(lines + ["```", report, "```"] if report else lines)
