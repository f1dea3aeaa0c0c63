"""HTTP error handling shared by the live services' FastAPI apps."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """422 that says what is wrong, without echoing the input (a NaN in it cannot be rendered as JSON,
    which turned FastAPI's default answer into a 500)."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]
    message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
    return JSONResponse(status_code=422, content={"detail": errors, "message": message})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
