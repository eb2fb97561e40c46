"""The HTTP API: probes, /model and /predict, with auth and the body cap before any body is parsed.

Routes live at module level; what differs between deployments sits in app state: `settings`,
`holder` (the served model) and `request_model` (the /predict schema with this deployment's limits).
A request's order: body cap on Content-Length (BodyLimit) -> bearer token -> body read under the cap
-> JSON -> request model (every input rule) -> the model's own rule (pairs or not) -> prediction.
"""

from __future__ import annotations

import secrets
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from deploy.body_limit import BodyLimit
from deploy.errors import ServiceError, error_response, error_responses
from deploy.model_holder import ModelHolder, Served
from deploy.schemas import PredictRequestRules, parse_request, predict_request_model
from deploy.settings import Settings

INLINE_PARSE_BYTES = 64 * 1024  # larger bodies are parsed off the event loop, so probes keep answering
REQUEST_SCHEMA = "PredictRequest"

bearer = HTTPBearer(auto_error=False, description="FTFLOW_API_TOKEN, when the service was started with one")


def get_settings(request: Request) -> Settings:
    """The settings this app was created with."""
    return request.app.state.settings


async def require_token(settings: Annotated[Settings, Depends(get_settings)],
                        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """401 unless the bearer token matches FTFLOW_API_TOKEN (no check when the service has none)."""
    # async on purpose: a plain def dependency costs every request one more thread-pool hop.
    if settings.api_token is None:
        return
    if creds is None or not secrets.compare_digest(creds.credentials.encode(), settings.api_token.encode()):
        raise ServiceError(401, ["header", "authorization"], "missing or wrong bearer token: send the header "
                           "'Authorization: Bearer <FTFLOW_API_TOKEN>'", "unauthorized", {"WWW-Authenticate": "Bearer"})


def served_model(request: Request) -> Served:
    """The model this request runs on, read once: the whole request uses it even if a reload swaps it."""
    holder: ModelHolder = request.app.state.holder
    served = holder.current
    if served is None:
        raise ServiceError(503, [], f"no model loaded: {holder.last_error or 'the model is still loading'}",
                           "not_ready")
    return served


def decision_fields(record: dict | None) -> dict:
    """/model's view of the bundle's decision rule: temperature, threshold, its label and how it was chosen."""
    from tasks.modelling.calibration import describe_rule

    if record is None:  # regression, NER, or a bundle from before calibration
        return {"temperature": None, "threshold": None, "positive_label": None, "threshold_rule": None}
    return {"temperature": record["temperature"], "threshold": record["threshold"],
            "positive_label": record["positive_label"], "threshold_rule": describe_rule(record)}


async def predict_request(request: Request, _: Annotated[None, Depends(require_token)]) -> PredictRequestRules:
    """The /predict body, read under the body cap only after the token passed, then validated."""
    body = await request.body()
    model = request.app.state.request_model
    if len(body) > INLINE_PARSE_BYTES:
        return await run_in_threadpool(parse_request, model, body)
    return parse_request(model, body)


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
    return {"ready": True, "version": served.version, "last_reload_error": holder.last_error}


@api.get("/model", summary="the model served: name, version, task, labels, test metrics")
def model_info(served: Annotated[Served, Depends(served_model)],
               settings: Annotated[Settings, Depends(get_settings)]) -> dict:
    p = served.predictor
    metrics = {}
    for k, v in served.tags.items():
        if k.startswith("test_") and not k.startswith("test_support"):
            try:
                metrics[k[5:]] = float(v)
            except ValueError:
                pass
    return {"name": settings.model_name, "alias": settings.alias if settings.model_name else None,
            "version": served.version, "run_id": served.run_id, "task": p.task, "labels": p.labels,
            **decision_fields(p.meta.get("decision")),
            "max_length": p.max_length, "serving_file": p.model_file, "takes_pairs": p.needs_pairs,
            "metrics": metrics, "loaded_at": served.loaded_at, "max_batch": settings.max_batch,
            "max_chars": settings.max_chars}


@api.post("/predict", summary="predict one text or a batch (pairs for pair models; entities for NER)",
          openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
              "schema": {"$ref": f"#/components/schemas/{REQUEST_SCHEMA}"}}}}})
def predict(body: Annotated[PredictRequestRules, Depends(predict_request)],
            served: Annotated[Served, Depends(served_model)],
            settings: Annotated[Settings, Depends(get_settings)]) -> JSONResponse:
    # A plain `def`: FastAPI runs it in its thread pool; ONNX Runtime releases the GIL meanwhile.
    p = served.predictor
    texts, pairs = body.batch()
    if p.needs_pairs and pairs is None:
        raise ServiceError(422, ["body", body.pair_field], "this model classifies text pairs: send 'text_pair' "
                           "with 'text' (or 'text_pairs' with 'texts')", "pair_required")
    if not p.needs_pairs and pairs is not None:
        raise ServiceError(422, ["body", body.pair_field],
                           f"this {p.task} model takes single texts; leave out 'text_pair(s)'", "pair_refused")
    predictions = p.predict(texts, pairs)
    return JSONResponse({"model": {"name": settings.model_name, "version": served.version},
                         "predictions": predictions}, headers={"X-Model-Version": served.version})


async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
    return error_response(exc.status, exc.errors, exc.headers)


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(422, exc.errors())


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    # Starlette's own refusals (unknown path, wrong method) in the same shape as ours.
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, [{"type": kind, "loc": ["path"], "msg": f"{request.method} "
                                             f"{request.url.path}: {exc.detail}"}], exc.headers)


@asynccontextmanager
async def _lifespan(app: FastAPI):
    app.state.holder.start()
    yield
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
        if app.state.settings.api_token is None:  # no token to send: the document must not ask for one
            doc["components"].pop("securitySchemes", None)
            for operation in (op for path in doc["paths"].values() for op in path.values()):
                operation.pop("security", None)
                operation["responses"].pop("401", None)
        app.openapi_schema = doc
    return app.openapi_schema


def create_app(model_name: str | None = None, bundle_dir: str | None = None, **settings) -> FastAPI:
    """The FastAPI app serving `model_name`@champion (or a local bundle folder); settings as in Settings."""
    cfg = Settings.from_env(model_name=model_name, bundle_dir=bundle_dir, **settings)
    app = FastAPI(title="finetune-flow model service", lifespan=_lifespan,
                  description=f"Answers with {cfg.model_name or cfg.bundle_dir}"
                              f"{'@' + cfg.alias if cfg.model_name else ''} through ONNX Runtime.")
    app.state.settings = cfg
    app.state.holder = ModelHolder(cfg)
    app.state.request_model = predict_request_model(cfg.max_batch, cfg.max_chars)
    app.include_router(probes)
    app.include_router(api)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    app.openapi = lambda: _openapi(app)
    return app
