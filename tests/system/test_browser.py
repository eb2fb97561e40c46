"""The two UIs in a real browser: headless Debian Chromium, driven by Selenium, against the `ftflow up` stack.

The stack requires a login: the Prefect UI's own login form, and MLflow's HTTP basic auth (sent as a
header, as a browser does after its login prompt). Screenshots land in the test's temp folder (FTFLOW_SCREENSHOTS keeps them elsewhere).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests import stack_support as ss

pytestmark = pytest.mark.slow
# ENVIRONMENT.md: without the background-networking flags Chromium floods the closed network.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
]
RENDER_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver, (
        "Debian's chromium and chromium-driver are needed: "
        "apt-get install -y chromium chromium-driver (.ci/run does it)"
    )
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(driver), options=opts)
    drv.set_page_load_timeout(RENDER_TIMEOUT_S)
    yield drv
    drv.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("FTFLOW_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_for_text(drv, *texts: str) -> None:
    """Wait until the rendered page shows every text (the UIs are single-page apps that fill in later)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d):
        body = d.find_element(By.TAG_NAME, "body").text
        return all(t in body for t in texts)

    try:
        WebDriverWait(drv, RENDER_TIMEOUT_S, poll_frequency=0.5).until(shown)
    except Exception:
        body = drv.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"{drv.current_url} did not show {texts}; it shows:\n{body[:1500]}") from None


@pytest.fixture(scope="module")
def prefect_login(up, browser, shots):
    """Log in through the Prefect UI's login form, as a user does on first load."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{up.prefect_url}/deployments")
    field = WebDriverWait(browser, RENDER_TIMEOUT_S).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "input[type=password]"))
    )
    body = browser.find_element(By.TAG_NAME, "body").text
    # No data before the login (the form's own wording varies; an error toast may sit beside it).
    assert not any(name in body for name in ("validate-data", "nightly", "manual")), body[:500]
    browser.save_screenshot(str(shots / "prefect-login.png"))
    field.send_keys(f"{ss.USER}:{ss.PASSWORD}", Keys.ENTER)
    WebDriverWait(browser, RENDER_TIMEOUT_S).until(
        lambda d: not d.find_elements(By.CSS_SELECTOR, "input[type=password]")
    )


def test_prefect_ui_lists_the_deployments(up, browser, shots, prefect_login):
    browser.get(f"{up.prefect_url}/deployments")
    wait_for_text(browser, "nightly", "manual", "fine-tune", "validate-data")
    path = shots / "prefect-deployments.png"
    assert browser.save_screenshot(str(path)) and path.stat().st_size > 10_000


def test_prefect_ui_run_form_shows_the_typed_config_with_the_preset(up, browser, shots, prefect_login):
    dep = ss.read_deployment(up.prefect_api, "fine-tune/manual")
    browser.get(f"{up.prefect_url}/deployments/deployment/{dep['id']}/run")  # the Run button's "Custom run"
    wait_for_text(browser, "Learning Rate", "peak learning rate", "Max Length", "Model Name")
    path = shots / "prefect-run-form.png"
    assert browser.save_screenshot(str(path)) and path.stat().st_size > 10_000


def test_mlflow_ui_shows_the_served_run(up, manual_run, browser, shots):
    import base64

    from mlflow.tracking import MlflowClient
    from selenium.webdriver.common.by import By

    c = MlflowClient(tracking_uri=up.mlflow_url)
    exp = c.get_experiment_by_name("stack-tests")
    run_name = c.search_runs([exp.experiment_id])[0].info.run_name
    browser.get(f"{up.mlflow_url}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning")
    assert run_name not in browser.find_element(By.TAG_NAME, "body").text  # 401: headless Chromium shows nothing
    token = base64.b64encode(f"{ss.USER}:{ss.PASSWORD}".encode()).decode()
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
    # A fresh browser opens experiments in the GenAI view; training runs live in "Model training".
    browser.get(f"{up.mlflow_url}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning")
    wait_for_text(browser, run_name)
    path = shots / "mlflow-experiment.png"
    assert browser.save_screenshot(str(path)) and path.stat().st_size > 10_000
