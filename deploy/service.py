"""The HTTP service: answers with models:/NAME@champion through ONNX Runtime, never importing torch.

Start: `ftflow serve NAME` or `python -m deploy.service NAME` (uvicorn, one process). At start it
downloads the champion's serving bundle and then follows the alias (deploy/model_holder.py); the
routes are in deploy/app.py, the request rules in deploy/schemas.py.

Settings (environment; `create_app` arguments and command-line options win; deploy/settings.py):
  FTFLOW_API_TOKEN       bearer token required on /predict, /feedback, /model and the docs (/docs, /redoc,
                         /openapi.json); at least 16 characters, not a pattern (the service refuses to start
                         otherwise); required to listen beyond loopback unless --insecure is given
  FTFLOW_MAX_BATCH       most texts in one request (default 64)
  FTFLOW_MAX_CHARS       most characters in one text, as sent and as the model reads it (normalised)
                         (default 20000); longer is refused, not cut
  FTFLOW_MAX_BODY_BYTES  largest request body (default: a full batch of the longest texts and pairs)
  FTFLOW_POLL_SECONDS    how often the champion alias is checked (default 10; 0 turns reload off)
  FTFLOW_ORT_THREADS     ONNX Runtime intra-op threads per request (default 1: requests run side by side)
  FTFLOW_LOG_PREDICTIONS every answer into the prediction log (default 1; 0 turns it off); where:
                         FTFLOW_PREDICTION_LOG; raw texts only with FTFLOW_LOG_TEXTS=1
  FTFLOW_LOG_QUEUE       log rows held in memory before the oldest are dropped (default 10000)
  FTFLOW_SHADOW          an alias (e.g. challenger) answering every request too, off the request's path
  FTFLOW_CANARY_PERCENT  share of requests (sticky per request id) the second alias answers instead
  FTFLOW_SHADOW_QUEUE    requests waiting for the shadow model before the oldest are dropped (default 1000)
  FTFLOW_HEADER_TIMEOUT  seconds for a request's line and headers to arrive (default 10); then 408, closed
  FTFLOW_BODY_TIMEOUT    seconds for a body to arrive after its headers (default 60); then 408, closed
  FTFLOW_KEEP_ALIVE      seconds an idle connection waits for a next request (default 5)
  FTFLOW_MAX_CONNECTIONS open connections (default 2048); beyond it the longest-waiting idle one is closed
                         (503 for the newcomer when all have requests in progress); the soft open-file limit
                         is raised to the hard one, and the cap lowered (with a warning) if that is too few
  FTFLOW_MAX_REQUESTS    requests in progress at once, probes aside (default 64); beyond it: 503, Retry-After
  MLFLOW_TRACKING_URI / FTFLOW_MLRUNS   where the registry is (see tasks/platform/tracking.py)
"""

from __future__ import annotations

import argparse
import logging
import os

import uvicorn

from deploy.app import create_app
from deploy.connections import ConnectionGuard, fit_open_files, guarded_protocol
from tasks.platform.network import is_loopback

log = logging.getLogger("ftflow.serve")


def configure_logging() -> None:
    # Reloads and reload failures must show in the process log, next to uvicorn's own lines.
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def check_exposure(host: str, token: str | None, insecure: bool) -> None:
    """Refuse to listen beyond loopback without a token, unless told it is on purpose (--insecure)."""
    if token or is_loopback(host):
        return
    if not insecure:
        raise ValueError(
            f"refusing to listen on {host} without FTFLOW_API_TOKEN: anyone who reaches this port could use "
            f"the model. Set FTFLOW_API_TOKEN (clients then send 'Authorization: Bearer <token>'), or pass "
            f"--insecure when something in front of the service (a gateway, a private network) does the auth"
        )
    log.warning("listening on %s WITHOUT a token (--insecure): anyone who reaches this port can use the model", host)


def serve(
    model_name: str | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    bundle_dir: str | None = None,
    insecure: bool = False,
    **settings,
) -> None:
    """Run the service in this process until interrupted."""
    configure_logging()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app = create_app(model_name, bundle_dir, **settings)
    s = app.state.settings
    check_exposure(host, s.api_token, insecure)
    max_connections, backlog = fit_open_files(s.max_connections)
    guard = ConnectionGuard(s.header_timeout, s.body_timeout, max_connections)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        http=guarded_protocol(guard),  # uvicorn's h11 with read deadlines and the connection cap
        ws="none",  # no websocket routes: an Upgrade header is an ordinary request
        timeout_keep_alive=s.keep_alive,
        backlog=backlog,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.service", description=__doc__.split("\n")[0])
    ap.add_argument("name", nargs="?", default=os.environ.get("FTFLOW_MODEL_NAME"), help="registered model name")
    ap.add_argument("--bundle", default=os.environ.get("FTFLOW_BUNDLE"), help="serve this bundle folder instead")
    ap.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default 127.0.0.1; beyond loopback needs FTFLOW_API_TOKEN)",
    )
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument(
        "--insecure",
        action="store_true",
        help="listen beyond loopback without FTFLOW_API_TOKEN (auth done in front of the service)",
    )
    args = ap.parse_args(argv)
    try:
        serve(args.name, args.host, args.port, args.bundle, insecure=args.insecure)
    except ValueError as e:
        ap.exit(2, f"error: {e}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
