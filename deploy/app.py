"""The HTTP API: probes, /model, /predict and /feedback, with auth and the body cap before any body is parsed.

Routes live at module level; what differs between deployments sits in app state: `settings`,
`holder` (the served model), `request_model` (the /predict schema with this deployment's limits),
`logger` (the prediction log, or None), `second` (the shadow/canary alias's holder, or None) and
`shadow` (its worker, when FTFLOW_SHADOW is set); deploy/traffic.py says what happens to an answer.
A request's order: requests in progress under FTFLOW_MAX_REQUESTS (RequestCap) -> body cap on
Content-Length (BodyLimit) -> bearer token -> body read under the cap -> JSON -> request model (every
input rule) -> the model's own rule (pairs or not) -> each text's length as the model reads it
(normalised) -> prediction. Deadlines on reading a request and the connection cap sit below the app,
in the server's protocol (deploy/connections.py).
With FTFLOW_API_TOKEN the API's description (/docs, /redoc, /openapi.json) needs the token too; only
the probes (/health, /ready) stay open.
"""

from __future__ import annotations

import logging
import secrets
import time
from contextlib import asynccontextmanager, suppress
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from deploy.body_limit import BodyLimit
from deploy.errors import ServiceError, error_response, error_responses
from deploy.model_holder import ModelHolder, Served
from deploy.request_cap import RequestCap
from deploy.schemas import (
    FeedbackRequest,
    PredictRequestRules,
    PredictResponse,
    parse_request,
    predict_request_model,
)
from deploy.settings import Settings
from deploy.traffic import ShadowJob, ShadowRunner, log_answers, request_ids, routes_to_canary, text_ids
from tasks.inference.normalize import TextsTooLong
from tasks.monitoring.feedback import FeedbackError, LogUnavailable, record_feedback
from tasks.monitoring.prediction_log import PredictionLogger

log = logging.getLogger("ftflow.serve")
INLINE_PARSE_BYTES = 64 * 1024  # larger bodies are parsed off the event loop, so probes keep answering
REQUEST_SCHEMA = "PredictRequest"
FEEDBACK_SCHEMA = "FeedbackRequest"

bearer = HTTPBearer(auto_error=False, description="FTFLOW_API_TOKEN, when the service was started with one")


def get_settings(request: Request) -> Settings:
    """The settings this app was created with."""
    return request.app.state.settings


async def require_token(
    settings: Annotated[Settings, Depends(get_settings)],
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str | None:
    """The client the bearer token names (FTFLOW_API_TOKEN's holder or a FTFLOW_API_TOKENS client); 401 unless
    it matches one; None when the service takes no token."""
    # async on purpose: a plain def dependency costs every request one more thread-pool hop.
    if not settings.guarded:
        return None
    sent = creds.credentials.encode() if creds is not None else b""
    client = None
    for name, token in settings.tokens():  # every token compared, in constant time: no early exit to time
        if secrets.compare_digest(sent, token.encode()):
            client = name
    if client is None:
        raise ServiceError(
            401,
            ["header", "authorization"],
            "missing or wrong bearer token: send the header 'Authorization: Bearer <FTFLOW_API_TOKEN>'",
            "unauthorized",
            {"WWW-Authenticate": "Bearer"},
        )
    return client


def served_model(request: Request) -> Served:
    """The model this request runs on, read once: the whole request uses it even if a reload swaps it."""
    holder: ModelHolder = request.app.state.holder
    served = holder.current
    if served is None:
        raise ServiceError(
            503, [], f"no model loaded: {holder.last_error or 'the model is still loading'}", "not_ready"
        )
    return served


def decision_fields(record: dict | None) -> dict:
    """/model's view of the bundle's decision rule: temperature, threshold, its label and how it was chosen, and
    the bag of words' share when the model serves blended with it (model.blend)."""
    # heavy (numpy via tasks.inference.decode): loaded when this runs, so importing deploy.app stays light
    from tasks.inference.decode import describe_rule

    if record is None:  # regression, NER, or a bundle from before calibration
        return {
            "temperature": None,
            "threshold": None,
            "positive_label": None,
            "threshold_rule": None,
            "blend_weight": None,
        }
    fields = {
        "temperature": record["temperature"],
        "threshold": record["threshold"],
        "positive_label": record["positive_label"],
        "threshold_rule": describe_rule(record),
        # the model's share of the served probabilities; None: the model alone answers
        "blend_weight": record["blend"]["weight"] if (record.get("blend") or {}).get("weight", 1.0) < 1.0 else None,
    }
    if record.get("thresholds") is not None:  # multi-label: each label's own threshold
        fields["label_thresholds"] = {p["label"]: t for p, t in zip(record["per_label"], record["thresholds"])}
    return fields


async def predict_request(request: Request, _: Annotated[str | None, Depends(require_token)]) -> PredictRequestRules:
    """The /predict body, read under the body cap only after the token passed, then validated."""
    body = await request.body()
    model = request.app.state.request_model
    if len(body) > INLINE_PARSE_BYTES:
        return await run_in_threadpool(parse_request, model, body)
    return parse_request(model, body)


async def feedback_request(request: Request, _: Annotated[str | None, Depends(require_token)]) -> FeedbackRequest:
    """The /feedback body, read under the body cap only after the token passed, then validated."""
    return parse_request(FeedbackRequest, await request.body())


probes = APIRouter()
api = APIRouter(dependencies=[Depends(require_token)], responses=error_responses(401, 413, 422, 503))


@probes.get("/health", summary="liveness: the process answers")
async def health() -> dict:
    return {"status": "ok"}


@probes.get("/ready", summary="readiness: a model is loaded and answering")
async def ready(request: Request):
    holder: ModelHolder = request.app.state.holder
    served = holder.current
    if served is None:
        return JSONResponse(status_code=503, content={"ready": False, "reason": holder.last_error or "loading"})
    out = {"ready": True, "version": served.version, "last_reload_error": holder.last_error}
    if request.app.state.logger is not None:
        out["prediction_log"] = log_health(request.app.state.logger)
    return out


def log_health(logger) -> dict:
    """The prediction log as /ready shows it: "degraded" while writes fail (answers held in memory and retried)
    or once any answer was lost since start; the service keeps answering either way."""
    s = logger.stats()
    return {
        "status": "ok" if s.status == "ok" else "degraded",
        "reason": s.status,
        "rows_lost": s.dropped,
        "rows_waiting": s.queued,
        "failed_writes": s.failed_writes,
        "last_error": s.last_error,
    }


@api.get("/model", summary="the model served: name, version, task, labels, test metrics; log, shadow, canary")
def model_info(
    request: Request,
    served: Annotated[Served, Depends(served_model)],
    settings: Annotated[Settings, Depends(get_settings)],
) -> dict:
    p = served.predictor
    metrics = {}
    for k, v in served.tags.items():
        if k.startswith("test_") and not k.startswith("test_support"):
            with suppress(ValueError):
                metrics[k[5:]] = float(v)
    return {
        "name": settings.model_name,
        "alias": settings.alias if settings.model_name else None,
        "version": served.version,
        "run_id": served.run_id,
        "task": p.task,
        "labels": p.labels,
        **decision_fields(p.meta.get("decision")),
        "max_length": p.max_length,
        "serving_file": p.model_file,
        "takes_pairs": p.needs_pairs,
        "metrics": metrics,
        "loaded_at": served.loaded_at,
        "max_batch": settings.max_batch,
        "max_chars": settings.max_chars,
        **traffic_state(request.app, served),
    }


def traffic_state(app: FastAPI, served: Served) -> dict:
    """The prediction log, shadow and canary as /model shows them."""
    s: Settings = app.state.settings
    logger, second, shadow = app.state.logger, app.state.second, app.state.shadow
    out = {"prediction_log": {"enabled": logger is not None, **(vars(logger.stats()) if logger else {})}}
    if second is not None:
        other = second.current
        model = {
            "alias": s.second_alias,
            "version": other.version if other else None,
            "same_as_served": bool(other) and other.version == served.version,
            "last_error": second.last_error,
        }
        out["shadow"] = {"enabled": bool(s.shadow), **(model if s.shadow else {}), **(shadow.stats() if shadow else {})}
        out["canary"] = {"percent": s.canary_percent, **(model if s.canary_percent else {})}
    else:
        out["shadow"], out["canary"] = {"enabled": False}, {"percent": 0.0}
    return out


@api.post(
    "/predict",
    summary="predict one text or a batch (pairs for pair models; entities for NER)",
    responses={200: {"model": PredictResponse, "description": "one answer per text, shaped by the model's task"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{REQUEST_SCHEMA}"}}},
        }
    },
)
def predict(
    request: Request,
    body: Annotated[PredictRequestRules, Depends(predict_request)],
    served: Annotated[Served, Depends(served_model)],
    settings: Annotated[Settings, Depends(get_settings)],
    client: Annotated[str | None, Depends(require_token)],
) -> JSONResponse:
    # A plain `def`: FastAPI runs it in its thread pool; ONNX Runtime releases the GIL meanwhile.
    state = request.app.state
    rid, client_id = request_ids(request.headers.get("x-request-id"))
    answering, role = served, "champion"
    if settings.canary_percent and routes_to_canary(client_id or rid, settings.canary_percent):
        canary = state.second.current
        if canary is not None and canary.version != served.version:  # none loaded yet: the champion answers
            answering, role = canary, "canary"
    p = answering.predictor
    texts, pairs = body.batch()
    if p.needs_pairs and pairs is None:
        raise ServiceError(
            422,
            ["body", body.pair_field],
            "this model classifies text pairs: send 'text_pair' with 'text' (or 'text_pairs' with 'texts')",
            "pair_required",
        )
    if not p.needs_pairs and pairs is not None:
        raise ServiceError(
            422,
            ["body", body.pair_field],
            f"this {p.task} model takes single texts; leave out 'text_pair(s)'",
            "pair_refused",
        )
    t = time.perf_counter()
    try:
        predictions = p.predict(texts, pairs)
    except TextsTooLong as e:
        raise too_long_once_normalised(e, body) from None
    latency_ms = (time.perf_counter() - t) * 1000
    ids = text_ids(rid, len(texts), batch=body.texts is not None)
    if state.logger is not None:
        log_answers(
            state.logger,
            ids,
            predictions,
            texts,
            pairs,
            settings.model_name or "local",
            answering.version,
            role,
            latency_ms,
            client_id,
            client,
        )
    if state.shadow is not None and role == "champion":
        state.shadow.submit(ShadowJob(ids, texts, pairs, served.version, client_id, client))
    for item_id, answer in zip(ids, predictions):
        answer["request_id"] = item_id
    return JSONResponse(
        {
            "request_id": rid,
            "client_request_id": client_id,
            "model": {"name": settings.model_name, "version": answering.version, "role": role},
            "predictions": predictions,
        },
        headers={
            "X-Model-Version": answering.version,
            "X-Request-ID": rid,
            **({"X-Client-Request-ID": client_id} if client_id else {}),
        },
    )


@api.post(
    "/feedback",
    summary="store corrected labels for answers of /predict (one, or a batch in 'items')",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{FEEDBACK_SCHEMA}"}}},
        }
    },
)
def feedback(
    request: Request,
    body: Annotated[FeedbackRequest, Depends(feedback_request)],
    client: Annotated[str | None, Depends(require_token)],
) -> dict:
    # A plain `def`: storing reads the log (the writer is flushed first so a fresh answer is found).
    try:
        stored = record_feedback(body.as_items(), logger=request.app.state.logger, client=client)
    except LogUnavailable as e:
        raise ServiceError(503, [], str(e), "log_unavailable", {"Retry-After": "30"}) from e
    except FeedbackError as e:
        hint = "" if request.app.state.logger else " (this service does not log predictions: FTFLOW_LOG_PREDICTIONS=0)"
        raise ServiceError.of(
            422,
            [
                {
                    "type": "feedback_refused",
                    "msg": f"{p['request_id']}: {p['error']}{hint}",
                    "loc": ["body", *(["items", p["index"]] if body.items is not None else []), p["field"]],
                }
                for p in e.problems
            ],
        ) from e
    return {"stored": stored}


def too_long_once_normalised(e: TextsTooLong, body: PredictRequestRules) -> ServiceError:
    """The 422 for texts the request model let through but the model would read longer than FTFLOW_MAX_CHARS."""
    batch = body.texts is not None
    places = [("texts" if batch else "text", t) for t in e.texts] + [(body.pair_field, p) for p in e.pairs]
    return ServiceError.of(
        422,
        [
            {"type": "string_too_long", "loc": ["body", field, *([t.row] if batch else [])], "msg": e.describe(t)}
            for field, t in places
        ],
    )


async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
    return error_response(exc.status, exc.errors, exc.headers)


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(422, exc.errors())


async def _client_gone(request: Request, exc: ClientDisconnect) -> Response:
    # The client left (or FTFLOW_BODY_TIMEOUT closed it, after a 408) before its body was read: nobody
    # is there to answer, and it is not the service's error, so no traceback in the log either.
    log.info("%s %s: the client went away before its body was read", request.method, request.url.path)
    return Response(status_code=400)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    # Starlette's own refusals (unknown path, wrong method) in the same shape as ours.
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(
        exc.status_code,
        [{"type": kind, "loc": ["path"], "msg": f"{request.method} {request.url.path}: {exc.detail}"}],
        exc.headers,
    )


@asynccontextmanager
async def _lifespan(app: FastAPI):
    s: Settings = app.state.settings
    app.state.holder.start()
    app.state.logger = PredictionLogger(max_queue=s.log_queue) if s.log_predictions else None
    app.state.second = app.state.shadow = None
    if s.second_alias:
        app.state.second = ModelHolder(s.model_copy(update={"alias": s.second_alias}))
        app.state.second.start()
        if s.shadow:
            assert s.model_name is not None, "Settings refuses a shadow without a registered model"
            app.state.shadow = ShadowRunner(app.state.second, app.state.logger, s.model_name, s.shadow_queue)
    yield
    # Shadow answers first (they log too), then the log is drained: a clean shutdown loses no row.
    if app.state.shadow is not None:
        app.state.shadow.close()
    if app.state.logger is not None:
        stats = app.state.logger.close()
        if stats.dropped or stats.failed_writes or stats.queued:
            log.warning("prediction log at shutdown: %s rows lost (%s)", stats.dropped, stats)
    if app.state.second is not None:
        app.state.second.stop()
    app.state.holder.stop()


def _openapi(app: FastAPI) -> dict:
    # /predict reads its body itself (after the token, under the cap), so FastAPI cannot see its model:
    # the deployment's request model goes into the document here, limits included, and auth only
    # where this deployment has a token.
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema = app.state.request_model.model_json_schema(ref_template="#/components/schemas/{model}")
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        components.update(schema.pop("$defs", {}))
        components[REQUEST_SCHEMA] = schema
        feedback = FeedbackRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(feedback.pop("$defs", {}))
        components[FEEDBACK_SCHEMA] = feedback
        if not app.state.settings.guarded:  # no token to send: the document must not ask for one
            doc["components"].pop("securitySchemes", None)
            for operation in (op for path in doc["paths"].values() for op in path.values()):
                operation.pop("security", None)
                operation["responses"].pop("401", None)
        app.openapi_schema = doc
    return app.openapi_schema


# With a token, the API's description is behind it too: FastAPI's own open routes are turned off and
# these take their place, guarded by the same `require_token` as /predict (a gateway that adds the
# header to every request lets a browser read /docs, whose page then fetches /openapi.json through it).
docs = APIRouter(dependencies=[Depends(require_token)], include_in_schema=False)
OPENAPI_URL = "/openapi.json"


@docs.get(OPENAPI_URL)
async def openapi_document(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@docs.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - Swagger UI")


@docs.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - ReDoc")


def create_app(model_name: str | None = None, bundle_dir: str | None = None, **settings) -> FastAPI:
    """The FastAPI app serving `model_name`@champion (or a local bundle folder); settings as in Settings."""
    cfg = Settings.from_env(model_name=model_name, bundle_dir=bundle_dir, **settings)
    guarded = cfg.guarded  # docs follow the token: open without one, behind it with one
    app = FastAPI(
        title="finetune-flow model service",
        lifespan=_lifespan,
        description=f"Answers with {cfg.model_name or cfg.bundle_dir}"
        f"{'@' + cfg.alias if cfg.model_name else ''} through ONNX Runtime.",
        openapi_url=None if guarded else OPENAPI_URL,
        docs_url=None if guarded else "/docs",
        redoc_url=None if guarded else "/redoc",
    )
    app.state.settings = cfg
    app.state.holder = ModelHolder(cfg)
    app.state.request_model = predict_request_model(cfg.max_batch, cfg.max_chars)
    app.state.logger = app.state.second = app.state.shadow = None  # set at start-up (_lifespan)
    app.include_router(probes)
    app.include_router(api)
    if guarded:
        app.include_router(docs)
    # Starlette types a handler as taking any Exception; it calls each with the class it was registered for.
    app.add_exception_handler(ServiceError, _service_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(ClientDisconnect, _client_gone)  # type: ignore[arg-type]
    assert cfg.max_body_bytes is not None, "Settings derives max_body_bytes while validating"
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    app.add_middleware(RequestCap, max_requests=cfg.max_requests)  # added last: runs first
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
    return app
