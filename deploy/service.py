"""The HTTP service: answers with models:/NAME@champion through ONNX Runtime, never importing torch.

Start: `ftflow serve NAME` or `python -m deploy.service NAME` (uvicorn, one process). At start it
downloads the champion's serving bundle; a background thread then polls the alias and, when it
moves, loads the new version beside the old one and swaps a single reference: a request reads
that reference once, so it finishes on the model it started with and never fails for a reload.

Settings (environment; the `create_app` arguments win):
  FTFLOW_API_TOKEN      bearer token required on /predict and /model when set
  FTFLOW_MAX_BATCH      most texts in one request (default 64)
  FTFLOW_MAX_CHARS      most characters in one text (default 20000); longer is refused, not cut
  FTFLOW_POLL_SECONDS   how often the champion alias is checked (default 10; 0 turns reload off)
  FTFLOW_ORT_THREADS    ONNX Runtime intra-op threads per request (default 1: requests run side by side)
  MLFLOW_TRACKING_URI / FTFLOW_MLRUNS   where the registry is (see tasks/tracking.py)
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator
from pydantic_core import PydanticCustomError

log = logging.getLogger("ftflow.serve")

DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_CHARS = 20_000
DEFAULT_POLL_SECONDS = 10.0
MAX_RETRY_WAIT_S = 600  # longest wait before loading a failed version again
DEFAULT_THREADS = 1


def _env_number(name: str, default: float, cast=int):
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return cast(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a {cast.__name__}") from None


@dataclass
class Settings:
    """What the service needs to run; `from_env` fills the gaps from the environment."""

    model_name: str | None = None
    bundle_dir: str | None = None  # serve a local bundle (a run's onnx/ folder) instead of the registry
    alias: str = "champion"
    max_batch: int = DEFAULT_MAX_BATCH
    max_chars: int = DEFAULT_MAX_CHARS
    poll_seconds: float = DEFAULT_POLL_SECONDS
    threads: int = DEFAULT_THREADS
    api_token: str | None = None

    @classmethod
    def from_env(cls, **given) -> "Settings":
        values = {"max_batch": _env_number("FTFLOW_MAX_BATCH", DEFAULT_MAX_BATCH),
                  "max_chars": _env_number("FTFLOW_MAX_CHARS", DEFAULT_MAX_CHARS),
                  "poll_seconds": _env_number("FTFLOW_POLL_SECONDS", DEFAULT_POLL_SECONDS, float),
                  "threads": _env_number("FTFLOW_ORT_THREADS", DEFAULT_THREADS),
                  "api_token": os.environ.get("FTFLOW_API_TOKEN") or None}
        values.update({k: v for k, v in given.items() if v is not None})
        s = cls(**values)
        if not (s.model_name or s.bundle_dir):
            raise ValueError("give a registered model name (ftflow serve NAME) or a bundle folder to serve")
        return s


@dataclass(frozen=True)
class Served:
    """One loaded model version; replaced whole, never changed in place."""

    predictor: object
    version: str
    run_id: str | None
    tags: dict
    folder: Path
    loaded_at: str


@dataclass
class ModelHolder:
    """Holds the served model and keeps it on the alias's version (the hot-reload thread)."""

    settings: Settings
    current: Served | None = None
    last_error: str | None = None
    # A version whose bundle failed to load is retried with backoff, not downloaded again every poll.
    _failed: dict = field(default_factory=dict)  # version -> (failures, monotonic time of the next try)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ftflow-serve-")))

    def load_bundle(self, folder: Path, version: str, run_id: str | None, tags: dict) -> Served:
        from tasks.inference.predictor import OnnxPredictor

        predictor = OnnxPredictor(folder, threads=self.settings.threads)
        predictor.predict(["warm-up"], ["warm-up"] if predictor.needs_pairs else None)  # first run allocates
        return Served(predictor, version, run_id, tags, folder,
                      dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    def refresh(self) -> bool:
        """Load the alias's version if it is not the one served; True when a new model went live."""
        from tasks import register

        s = self.settings
        if s.bundle_dir:
            if self.current is None:
                self.current = self.load_bundle(Path(s.bundle_dir), "local", None, {})
                return True
            return False
        target = None
        try:
            mv = register.version_by_alias(s.model_name, s.alias)
            if mv is None:
                self.last_error = (f"model '{s.model_name}' has no version with alias '{s.alias}'; "
                                   f"promote one with `ftflow promote {s.model_name}`")
                return False
            version = str(mv.version)
            if self.current is not None and self.current.version == version:
                self.last_error = None
                return False
            failures, next_try = self._failed.get(version, (0, 0.0))
            if time.monotonic() < next_try:
                return False  # last_error still says why this version is not served
            target = self._root / f"v{version}"
            folder = register.download_bundle(s.model_name, version, target)
            fresh = self.load_bundle(folder, version, mv.run_id, dict(mv.tags))
        except Exception as e:  # keep serving what we have; /ready and the log say what went wrong
            self.last_error = f"loading {s.model_name}@{s.alias} failed: {type(e).__name__}: {e}"
            if target is not None:
                failures += 1
                wait = min(s.poll_seconds * 2 ** failures, MAX_RETRY_WAIT_S)
                self._failed[version] = (failures, time.monotonic() + wait)
                self.last_error += f" (next try in {wait:.0f} s)"
            log.warning(self.last_error)
            if target is not None and (self.current is None or self.current.folder != target):
                shutil.rmtree(target, ignore_errors=True)  # a half download must not pass for a whole one
            return False
        self._failed.pop(version, None)
        old, self.current = self.current, fresh  # the swap: one reference assignment
        self.last_error = None
        log.info("serving %s version %s%s", s.model_name, version, f" (was {old.version})" if old else "")
        if old is not None and old.folder != fresh.folder:
            # The old session holds its model in memory; requests still on it are unaffected.
            shutil.rmtree(old.folder, ignore_errors=True)
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self.settings.poll_seconds):
            self.refresh()

    def start(self) -> None:
        self.refresh()
        if self.settings.model_name and not self.settings.bundle_dir and self.settings.poll_seconds > 0:
            self._thread = threading.Thread(target=self._watch, name="champion-watcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        shutil.rmtree(self._root, ignore_errors=True)


def _refuse(msg: str) -> PydanticCustomError:
    # A custom error type keeps the message as written (a ValueError gets "Value error, " in front).
    return PydanticCustomError("invalid_request", msg)


class _Unauthorized(Exception):
    pass


class _NotReady(Exception):
    pass


class PredictRequest(BaseModel):
    """One text (`text`) or a batch (`texts`); pair models also take `text_pair` / `text_pairs`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"text": "a wonderful, moving film"}, {"texts": ["tedious and dull", "a delight"]},
        {"text": "The cat sat.", "text_pair": "A cat was sitting."}]})

    text: StrictStr | None = Field(None, description="one text")
    texts: list[StrictStr] | None = Field(None, description="a batch of texts")
    text_pair: StrictStr | None = Field(None, description="the second text, for a pair model with `text`")
    text_pairs: list[StrictStr] | None = Field(None, description="second texts, one per entry of `texts`")

    @model_validator(mode="after")
    def _check_shape(self) -> "PredictRequest":
        if (self.text is None) == (self.texts is None):
            raise _refuse("send either 'text' (one string) or 'texts' (a list of strings), exactly one of them")
        if self.texts is not None and not self.texts:
            raise _refuse("'texts' is an empty batch; send at least one text")
        if self.text is not None and self.text_pairs is not None:
            raise _refuse("with 'text' send 'text_pair' (one string), not 'text_pairs'")
        if self.texts is not None and self.text_pair is not None:
            raise _refuse("with 'texts' send 'text_pairs' (a list), not 'text_pair'")
        if self.text_pairs is not None and len(self.text_pairs) != len(self.texts):
            raise _refuse(f"'text_pairs' has {len(self.text_pairs)} entries but 'texts' has {len(self.texts)}; "
                             f"give one second text per text")
        for field_name, values in (("text", [self.text]), ("texts", self.texts), ("text_pair", [self.text_pair]),
                                   ("text_pairs", self.text_pairs)):
            for i, v in enumerate(values or []):
                if v is not None and not v.strip():
                    where = f"{field_name}[{i}]" if field_name.endswith("s") else field_name
                    raise _refuse(f"{where} is empty (or only whitespace); send text to classify")
        return self

    def batch(self) -> tuple[list[str], list[str] | None]:
        texts = self.texts if self.texts is not None else [self.text]
        pairs = self.text_pairs if self.text_pairs is not None else ([self.text_pair] if self.text_pair else None)
        return texts, pairs


class InputRefused(Exception):
    """A request the model cannot answer as sent (422); loc says where in the body."""

    def __init__(self, loc: list, msg: str):
        self.loc, self.msg = loc, msg


def _message(errors: list[dict]) -> str:
    parts = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", []) if p != "body"]
        where = loc[0] + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:]) if loc else None
        parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
    return "; ".join(parts)


def create_app(model_name: str | None = None, bundle_dir: str | None = None, **settings) -> FastAPI:
    """The FastAPI app serving `model_name`@champion (or a local bundle folder)."""
    cfg = Settings.from_env(model_name=model_name, bundle_dir=bundle_dir, **settings)
    holder = ModelHolder(cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        holder.start()
        yield
        holder.stop()

    app = FastAPI(title="finetune-flow model service", lifespan=lifespan,
                  description=f"Answers with {cfg.model_name or cfg.bundle_dir}"
                              f"{'@' + cfg.alias if cfg.model_name else ''} through ONNX Runtime.")
    app.state.holder = holder
    bearer = HTTPBearer(auto_error=False, description="FTFLOW_API_TOKEN, when the service was started with one")

    async def require_token(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        # async on purpose: a plain def dependency costs every request one more thread-pool hop.
        if cfg.api_token is None:
            return
        if creds is None or not secrets.compare_digest(creds.credentials.encode(), cfg.api_token.encode()):
            raise _Unauthorized()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        # The input is not echoed back: a refused batch can be large.
        errors = jsonable_encoder([{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in exc.errors()])
        return JSONResponse(status_code=422, content={"detail": errors, "message": _message(errors)})

    @app.exception_handler(InputRefused)
    async def _refused(request: Request, exc: InputRefused):
        errors = [{"type": "value_error", "loc": ["body", *exc.loc], "msg": exc.msg}]
        return JSONResponse(status_code=422, content={"detail": errors, "message": _message(errors)})

    @app.exception_handler(_Unauthorized)
    async def _unauthorized(request: Request, exc):
        return JSONResponse(status_code=401, headers={"WWW-Authenticate": "Bearer"},
                            content={"detail": "missing or wrong bearer token: send the header "
                                               "'Authorization: Bearer <FTFLOW_API_TOKEN>'"})

    def served_or_503() -> Served:
        served = holder.current  # read once: the whole request uses this one model
        if served is None:
            raise _NotReady(holder.last_error or "the model is still loading")
        return served

    @app.exception_handler(_NotReady)
    async def _not_ready(request: Request, exc):
        return JSONResponse(status_code=503, content={"detail": f"no model loaded: {exc}"})

    @app.get("/health", summary="liveness: the process answers")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", summary="readiness: a model is loaded and answering")
    def ready():
        served = holder.current
        if served is None:
            return JSONResponse(status_code=503, content={"ready": False,
                                                          "reason": holder.last_error or "loading"})
        return {"ready": True, "version": served.version, "last_reload_error": holder.last_error}

    @app.get("/model", summary="the model served: name, version, task, labels, test metrics",
             dependencies=[Depends(require_token)])
    def model_info() -> dict:
        served = served_or_503()
        p = served.predictor
        metrics = {}
        for k, v in served.tags.items():
            if k.startswith("test_") and not k.startswith("test_support"):
                try:
                    metrics[k[5:]] = float(v)
                except ValueError:
                    pass
        return {"name": cfg.model_name, "alias": cfg.alias if cfg.model_name else None, "version": served.version,
                "run_id": served.run_id, "task": p.task, "labels": p.labels, "max_length": p.max_length,
                "serving_file": p.model_file, "takes_pairs": p.needs_pairs, "metrics": metrics,
                "loaded_at": served.loaded_at, "max_batch": cfg.max_batch}

    @app.post("/predict", summary="predict one text or a batch (pairs for pair models; entities for NER)",
              dependencies=[Depends(require_token)])
    def predict(body: PredictRequest) -> JSONResponse:
        # A plain `def`: FastAPI runs it in its thread pool; ONNX Runtime releases the GIL meanwhile.
        served = served_or_503()
        p = served.predictor
        texts, pairs = body.batch()
        batched = body.texts is not None
        field_name = "texts" if batched else "text"
        if len(texts) > cfg.max_batch:
            raise InputRefused([field_name], f"batch of {len(texts)} texts is above the maximum of {cfg.max_batch} "
                                             f"(FTFLOW_MAX_BATCH); split it into smaller requests")
        # Second texts too: the tokenizer reads a text whole before truncating it.
        for name, values in ((field_name, texts), ("text_pairs" if batched else "text_pair", pairs or [])):
            for i, t in enumerate(values):
                if len(t) > cfg.max_chars:
                    raise InputRefused([name, i] if batched else [name],
                                       f"text has {len(t)} characters, above the limit of {cfg.max_chars} "
                                       f"(FTFLOW_MAX_CHARS); texts up to the limit are truncated at "
                                       f"{p.max_length} tokens and flagged")
        if p.needs_pairs and pairs is None:
            raise InputRefused(["text_pairs" if body.texts is not None else "text_pair"],
                               "this model classifies text pairs: send 'text_pair' with 'text' "
                               "(or 'text_pairs' with 'texts')")
        if not p.needs_pairs and pairs is not None:
            raise InputRefused(["text_pairs" if body.texts is not None else "text_pair"],
                               f"this {p.task} model takes single texts; leave out 'text_pair(s)'")
        predictions = p.predict(texts, pairs)
        return JSONResponse({"model": {"name": cfg.model_name, "version": served.version},
                             "predictions": predictions}, headers={"X-Model-Version": served.version})

    return app


def configure_logging() -> None:
    # Reloads and reload failures must show in the process log, next to uvicorn's own lines.
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def app_from_env() -> FastAPI:
    """For `uvicorn --factory deploy.service:app_from_env` (the container): FTFLOW_MODEL_NAME or FTFLOW_BUNDLE."""
    configure_logging()
    return create_app(os.environ.get("FTFLOW_MODEL_NAME") or None, os.environ.get("FTFLOW_BUNDLE") or None)


def serve(model_name: str | None, host: str = "127.0.0.1", port: int = 8000, bundle_dir: str | None = None,
          **settings) -> None:
    """Run the service in this process until interrupted."""
    import uvicorn

    configure_logging()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    uvicorn.run(create_app(model_name, bundle_dir, **settings), host=host, port=port, log_level="info",
                access_log=False)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m deploy.service", description=__doc__.split("\n")[0])
    ap.add_argument("name", nargs="?", default=os.environ.get("FTFLOW_MODEL_NAME"), help="registered model name")
    ap.add_argument("--bundle", default=os.environ.get("FTFLOW_BUNDLE"), help="serve this bundle folder instead")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args(argv)
    serve(args.name, args.host, args.port, args.bundle)


if __name__ == "__main__":
    main()
