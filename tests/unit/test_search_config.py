"""search.storage and search.parallel: what the config refuses, how the storage URL is read, masked and named."""

from __future__ import annotations

import pytest


def test_parallel_without_a_storage_is_refused_with_the_fix():
    from tasks.config import load_config

    with pytest.raises(ValueError, match=r"search.parallel 2 .* set search.storage .* or set search.parallel to 1"):
        load_config(None, ["search.parallel=2"])
    with pytest.raises(ValueError, match="search.parallel"):
        load_config(None, ["search.parallel=0"])
    cfg = load_config(None, ["search.parallel=2", "search.storage=postgresql://ftflow:${PG_PW}@db:5432/optuna"])
    assert cfg.search.parallel == 2
    assert load_config(None, []).search.storage is None and load_config(None, []).search.parallel == 1


def test_a_literal_password_warns_and_every_written_copy_masks_it():
    from tasks.config import flatten_config, load_config

    with pytest.warns(UserWarning, match=r"search.storage holds a literal credential .* \$\{STORAGE_PASSWORD\}"):
        cfg = load_config(None, ["search.storage=postgresql://ftflow:hunter22@db/optuna"])
    assert "hunter22" not in cfg.to_yaml() and "hunter22" not in str(flatten_config(cfg))
    assert cfg.model_dump(mode="json")["search"]["storage"] == "postgresql://ftflow:***@db/optuna"
    kept = load_config(None, ["search.storage=postgresql://ftflow:${PG_PW}@db/optuna"])
    assert kept.model_dump(mode="json")["search"]["storage"] == "postgresql://ftflow:${PG_PW}@db/optuna"


def test_storage_url_expands_references_and_takes_the_psycopg_driver(monkeypatch):
    from tasks.modelling.study import storage_url
    from tasks.secrets import SecretReferenceError

    monkeypatch.setenv("PG_PW", "s3cr/et@x")
    url, used = storage_url("postgresql://ftflow:${PG_PW}@db:5432/optuna")
    assert url == "postgresql+psycopg://ftflow:s3cr/et@x@db:5432/optuna" and used == ("s3cr/et@x",)
    assert storage_url("postgres://u@db/optuna")[0] == "postgresql+psycopg://u@db/optuna"
    assert storage_url("postgresql+asyncpg://u@db/o")[0] == "postgresql+asyncpg://u@db/o"  # a driver given stays
    assert storage_url("sqlite:////tmp/s.db")[0] == "sqlite:////tmp/s.db"
    monkeypatch.delenv("PG_PW")
    with pytest.raises(SecretReferenceError, match="search.storage refers to \\$\\{PG_PW\\}"):
        storage_url("postgresql://ftflow:${PG_PW}@db/optuna")


def test_the_study_is_named_after_the_training_run_in_a_shared_storage(tmp_path):
    from tasks.config import load_config
    from tasks.modelling.study import study_name

    assert study_name(load_config(None, []), "abc123", tmp_path / "run-1") == "search"  # the run's own file
    shared = load_config(None, ["name=spam", "search.storage=sqlite:///x.db"])
    assert study_name(shared, "abc123", tmp_path / "run-1") == "spam-abc123"
    assert study_name(shared, None, tmp_path / "run-1") == "spam-run-1"


def test_an_unreachable_storage_is_one_masked_error(tmp_path, monkeypatch):
    from tasks.config import load_config
    from tasks.modelling.study import StudyStorageError, open_study

    monkeypatch.setenv("PG_PW", "topsecretpw")
    # A closed port on loopback: refused at once.
    cfg = load_config(None, ["search.storage=postgresql://ftflow:${PG_PW}@127.0.0.1:9/optuna"])
    with pytest.raises(StudyStorageError) as e:
        open_study(cfg, tmp_path, "s", "maximize", None, 0)
    text = str(e.value)
    assert "topsecretpw" not in text and "search.storage postgresql://ftflow:${PG_PW}@127.0.0.1:9/optuna" in text
    assert "environment variable is set where the search runs" in text and e.value.__cause__ is None


def test_each_optimizer_gets_its_share_of_the_cores(monkeypatch):
    from flows.ops.stack import worker_threads
    from tasks.modelling.search import core_share

    monkeypatch.setattr("os.sched_getaffinity", lambda _: {0, 1, 2, 3}, raising=False)
    assert [core_share(n) for n in (1, 2, 3, 4, 8)] == [4, 2, 1, 1, 1]
    assert worker_threads(2, {}) == 2 and worker_threads(8, {}) == 1
    assert worker_threads(2, {"OMP_NUM_THREADS": "3"}) == 3  # the user's own setting wins


def test_an_optimizer_starts_no_trial_beyond_the_study_s_trials(tmp_path):
    import optuna

    from tasks.config import load_config
    from tasks.modelling.study import SurplusTrial, check_not_surplus, run_optimizer

    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = load_config(None, ["search.trials=2", f"search.storage={url}"])
    study = optuna.create_study(storage=url)
    study.ask(), study.ask()  # two other optimizers' running trials: the study has its 2
    ran: list[int] = []
    run_optimizer(study, lambda t: ran.append(t.number) or 0.0, cfg)
    assert ran == [] and len(study.trials) == 2  # none started
    # Two optimizers that start a trial at the same moment: the later-numbered one is surplus, never run.
    study.optimize(lambda t: check_not_surplus(t, 2) or 0.0, n_trials=1, catch=(SurplusTrial,))
    late = study.trials[-1]
    assert late.number == 2 and late.state.name == "FAIL" and late.user_attrs["surplus"] is True
