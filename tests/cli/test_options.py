"""The one table of `adamtune search`'s options: its defaults are SearchSettings', except the
three rows that say why, and every setting a user can choose has a row."""

import dataclasses

import click
import pytest

from adamtune.cli.options import SEARCH_OPTIONS, settings_from
from adamtune.cli.search_command import search
from adamtune.config.settings import SearchSettings

DEFAULTS = {f.name: f.default for f in dataclasses.fields(SearchSettings)}
# Where the command line differs from the library, on purpose (each says why in the table).
DIFFERS = {"n_trials": None, "confirm": 3}
NOT_A_FLAG = {"max_retries", "worker"}  # set by the workers' parent, not by a user


def test_every_user_setting_has_one_row():
    fields = [o.field for o in SEARCH_OPTIONS if o.field]
    assert len(fields) == len(set(fields))
    assert set(fields) == set(DEFAULTS) - NOT_A_FLAG


def test_the_defaults_are_the_settings_defaults():
    for option in SEARCH_OPTIONS:
        if option.field is None or option.is_flag:
            continue
        expected = DIFFERS.get(option.field, DEFAULTS[option.field])
        assert option.resolved_default() == expected, option.flag


def test_the_command_has_the_table_in_its_order():
    flags = [p.opts[0] for p in search.params if isinstance(p, click.Option)]
    assert flags == [o.flag for o in SEARCH_OPTIONS]


@pytest.fixture(autouse=True)
def no_adamtune_environment(monkeypatch):
    import os

    for name in [n for n in os.environ if n.startswith("ADAMTUNE_")]:
        monkeypatch.delenv(name)


def parsed(*argv: str) -> dict:
    return search.make_context("search", list(argv)).params


def test_no_flags_give_the_library_defaults_but_confirmation():
    settings = settings_from(parsed(), tracking_uri=None)
    library = SearchSettings()
    assert dataclasses.replace(settings, confirm=library.confirm) == library
    assert settings.confirm == 3


def test_flags_reach_their_fields():
    settings = settings_from(
        parsed("--no-baseline", "--max-failures", "0", "--stack", "4", "--sampler", "grid"),
        tracking_uri="sqlite:///m.db",
    )
    assert settings.baseline is False
    assert settings.max_consecutive_failures == 0
    assert settings.stack == 4
    assert settings.n_trials is None  # the grid: the rest of it
    assert settings.tracking_uri == "sqlite:///m.db"


def test_a_bad_value_is_refused_by_the_settings_rules():
    with pytest.raises(Exception, match="device"):
        settings_from(parsed("--device", "meta"), tracking_uri=None)
