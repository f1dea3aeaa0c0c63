"""HTTP error handling shared by the live services' FastAPI apps."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
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


def reject_unknown_query(request: Request) -> None:
    """422 for a query parameter the route does not take (``?acount=x`` must not quietly list every
    account) or one given twice (which one would count?). An app-wide dependency: the matched route
    says which parameters it declares; none of them takes a list."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = {p.alias for p in _query_params(dependant)}
    unknown = sorted(set(request.query_params.keys()) - known)
    repeated = sorted(k for k in known if len(request.query_params.getlist(k)) > 1)
    if repeated:
        raise HTTPException(
            422, f"query parameter(s) {', '.join(repr(r) for r in repeated)} given more than once"
        )
    if unknown:
        raise HTTPException(
            422,
            f"unknown query parameter(s) {', '.join(repr(u) for u in unknown)}; this endpoint takes "
            + (", ".join(sorted(known)) if known else "none"),
        )


def _query_params(dependant: object) -> list[object]:
    params = list(getattr(dependant, "query_params", []))
    for sub in getattr(dependant, "dependencies", []):
        params += _query_params(sub)
    return params
