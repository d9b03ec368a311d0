"""The progress line: trials done, trials running (a stack's rows), best so far."""

import io

import optuna

from adamtune.cli.progress import Progress


def _line(study, trial, total=5):
    stream = io.StringIO()
    Progress(total, "val_accuracy", stream=stream, live=False)(study, trial)
    return stream.getvalue()


def test_the_line_counts_the_trials_still_running_beside_the_finished_one():
    study = optuna.create_study(direction="maximize")
    trials = [study.ask() for _ in range(3)]
    frozen = study.tell(trials[0], 0.5)
    line = _line(study, frozen)
    assert line.startswith("[#####...................] 1/5 trials, 2 running | ")
    assert "best val_accuracy 0.5 (trial 0) | trial 0 COMPLETE 0.5 |" in line


def test_with_nothing_else_running_the_count_is_left_out():
    study = optuna.create_study(direction="maximize")
    frozen = study.tell(study.ask(), state=optuna.trial.TrialState.PRUNED)
    line = _line(study, frozen, total=None)
    assert line.startswith("1 trials | best: none yet | trial 0 PRUNED")
    assert "running" not in line


def test_between_reads_of_the_study_this_processs_trials_update_the_best(monkeypatch):
    import adamtune.cli.progress

    monkeypatch.setattr(adamtune.cli.progress, "READ_EVERY", 3600.0)  # however slow the machine
    study = optuna.create_study(direction="minimize")
    stream = io.StringIO()
    progress = Progress(5, "val_mse", stream=stream, live=False)
    reads = []
    real_read = progress._read
    monkeypatch.setattr(progress, "_read", lambda study: reads.append(1) or real_read(study))
    for value in (0.5, 0.25, 0.75):
        progress(study, study.tell(study.ask(), value))
    lines = stream.getvalue().splitlines()
    assert len(reads) == 1  # within READ_EVERY: one read of the study for three trials
    assert [line.split(" | ")[1] for line in lines] == [
        "best val_mse 0.5 (trial 0)",
        "best val_mse 0.25 (trial 1)",
        "best val_mse 0.25 (trial 1)",
    ]


def test_the_last_line_reads_the_study_so_nothing_shows_as_running_at_the_end():
    study = optuna.create_study()
    trials = [study.ask() for _ in range(3)]
    stream = io.StringIO()
    progress = Progress(3, "val_loss", stream=stream, live=False)
    for trial in trials:
        progress(study, study.tell(trial, 1.0))
    lines = stream.getvalue().splitlines()
    assert [line.split(" | ")[0].split("] ")[1] for line in lines] == [
        "1/3 trials, 2 running",
        "2/3 trials, 1 running",  # counted down between reads
        "3/3 trials",
    ]


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_log_gets_a_line_per_evaluation_of_a_long_trial_with_the_time_left(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("adamtune.cli.progress.time.perf_counter", clock)
    stream = io.StringIO()
    progress = Progress(5, "val_accuracy", stream=stream, live=False)
    progress.epoch(3, 1, 4, {"val_accuracy": 0.5})
    clock.now += 1.0
    progress.epoch(3, 2, 4, {"val_accuracy": 0.6})  # within 5 s of the last line: none
    clock.now += 9.0
    progress.epoch(3, 3, 4, {"val_accuracy": 0.7})
    lines = stream.getvalue().splitlines()
    assert lines == [
        "trial 3: epoch 1/4, val_accuracy 0.5 | 0s",
        # 10 s for epochs 1 -> 3: 5 s an epoch, one epoch to go
        "trial 3: epoch 3/4, val_accuracy 0.7, ~5s left | 10s",
    ]


def test_a_terminal_shows_where_the_running_trials_are(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("adamtune.cli.progress.time.perf_counter", clock)
    stream = io.StringIO()
    progress = Progress(5, "val_accuracy", stream=stream, live=True)
    progress.epoch(7, 1, 20, {})
    assert stream.getvalue().endswith("\033[Ktrial 7 epoch 1/20")  # no trial has ended yet
    clock.now += 2.0
    progress.epoch(8, 1, 20, {})
    clock.now += 2.0
    progress.epoch(7, 3, 20, {})  # 2 s an epoch: 17 epochs to go
    assert stream.getvalue().endswith("\033[K2 running at epoch 1-3/20, ~34s left")
    study = optuna.create_study(direction="maximize")
    frozen = study.tell(study.ask(), 0.5)  # trial 0 finished; 7 and 8 still run
    progress._trials[frozen.number] = progress._trials.pop(7)
    progress(study, frozen)
    assert stream.getvalue().endswith(" | trial 8 epoch 1/20")


def test_every_evaluation_of_every_trial_reaches_on_epoch(storage):
    from adamtune.config.settings import SearchSettings
    from adamtune.search.run import run_search

    for stack in (1, 3):
        seen = []
        settings = SearchSettings(
            task="wine-mlp", storage=storage, n_trials=3, epochs=2, space="lr-only",
            study_name=f"progress-{stack}", stack=stack, baseline=False,
        )  # fmt: skip
        run_search(settings, on_epoch=lambda *args, seen=seen: seen.append(args))
        assert sorted((n, e, total) for n, e, total, _ in seen) == [
            (n, e, 2) for n in range(3) for e in (1, 2)
        ]
        assert all("val_accuracy" in metrics for *_, metrics in seen)


def test_confirmation_shows_runs_done_the_best_mean_and_the_time(monkeypatch):
    now = iter(float(t) for t in range(100))
    monkeypatch.setattr("adamtune.cli.progress.time.perf_counter", lambda: next(now))
    out = io.StringIO()
    progress = Progress(4, "val_accuracy", stream=out, live=False)
    progress.confirm_run(0, 9, "")
    progress.confirm_run(3, 9, "best mean 0.61 (trial 2), epoch 20/20")  # 1 s later: quiet
    progress.confirm_run(9, 9, "best mean 0.61 (trial 2)")  # the last run always shows
    lines = out.getvalue().splitlines()
    assert lines[0] == "[........................] 0/9 confirmation runs | 0s"
    assert (
        lines[-1]
        == "[########################] 9/9 confirmation runs | best mean 0.61 (trial 2) | 2s"
    )
    assert len(lines) == 2


def test_a_stacks_epoch_is_one_line_with_its_rows_epoch_best_row_and_time_left(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("adamtune.cli.progress.time.perf_counter", clock)
    stream = io.StringIO()
    progress = Progress(16, "val_loss", stream=stream, live=False, maximize=False)
    progress.stack([(n, 1, 20, {"val_loss": 1.0 + n}) for n in range(4)])
    clock.now += 6.0
    progress.stack([(n, 3, 20, {"val_loss": 2.0 - n / 10}) for n in range(4)])  # 3 s an epoch
    assert stream.getvalue().splitlines() == [
        "stack of 4 rows at epoch 1/20, best trial 0 val_loss 1 | 0s",
        "stack of 4 rows at epoch 3/20, best trial 3 val_loss 1.7, ~51s left | 6s",
    ]
    progress.live = True
    clock.now += 1.0
    progress.stack([(n, 4, 20, {"val_loss": 0.5}) for n in range(4)])
    assert stream.getvalue().endswith(
        "4 running at epoch 4/20, best trial 0 val_loss 0.5, ~37s left"
    )


def test_a_stacked_search_reports_each_epoch_of_all_its_rows_at_once(storage):
    from adamtune.config.settings import SearchSettings
    from adamtune.search.run import run_search

    calls = []
    settings = SearchSettings(
        task="wine-mlp", storage=storage, n_trials=3, epochs=2, space="lr-only",
        study_name="stacked-progress", stack=3, baseline=False,
    )  # fmt: skip
    run_search(settings, on_stack=calls.append)
    assert [sorted((n, e) for n, e, _, _ in rows) for rows in calls] == [
        [(n, e) for n in range(3)] for e in (1, 2)
    ]


def test_a_message_below_a_live_bar_starts_on_a_line_of_its_own():
    stream = io.StringIO()
    progress = Progress(2, "val_accuracy", stream=stream, live=True)
    study = optuna.create_study(direction="maximize")
    progress(study, study.tell(study.ask(), 0.5))
    progress.say("Confirmation: the top 2 instead of 5")
    progress.say("Confirming the top 2 trials")
    assert stream.getvalue().endswith(
        " | 0s\nConfirmation: the top 2 instead of 5\nConfirming the top 2 trials\n"
    )
