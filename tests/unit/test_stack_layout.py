"""What `ftflow up` deploys, without starting it: the names of several models' deployments, the workers' options."""

from __future__ import annotations

import pytest


def test_one_config_keeps_the_plain_names_and_several_are_named_after_their_model():
    from flows.automations import RETRAIN_DEPLOYMENT
    from flows.deployments import DEPLOYMENT_NAMES, deployment_names, qualified

    assert deployment_names() == DEPLOYMENT_NAMES
    a, b = deployment_names("model-a"), deployment_names("model-b")
    assert a[:2] == ["fine-tune/nightly-model-a", "fine-tune/manual-model-a"]
    assert len(set(a) | set(b)) == 2 * len(DEPLOYMENT_NAMES)  # no two models share a deployment
    assert qualified(RETRAIN_DEPLOYMENT, "model-a") in a


def test_workers_need_the_deployments(tmp_path):
    from flows.ops.stack import Stack

    for workers, serve in ((2, False), (-1, True)):
        with pytest.raises(ValueError, match="--workers"):
            Stack(home=tmp_path, prefect_port=0, mlflow_port=0, workers=workers, serve=serve)
    stack = Stack(home=tmp_path, prefect_port=0, mlflow_port=0, workers=2, config="configs/quickstart.yaml")
    assert stack.work_pool == "ftflow-process" and stack.configs == ["configs/quickstart.yaml"]
    assert Stack(home=tmp_path, prefect_port=0, mlflow_port=0).work_pool is None
