"""The agency service (FastAPI): each agency lists, reads and acknowledges the reports of its own jurisdictions.

Every answer comes from the caller's current jurisdictions only: a report outside them and one that does
not exist get the same 404. Every request, refused or not, is appended to the audit log with who made
it, what it asked and which report ids it was shown. Requests over the per-client rate get 429 before
any credential is checked.
"""
import contextlib
import logging
import re
import threading
from typing import Literal

import orjson

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse, Response

from starlette.exceptions import HTTPException as StarletteHTTPException

from services.agencies import pages
from services.agencies.directory import credential_from_header
from services.agencies.index import iso, utc_now
from services.common import credentials
from services.common.rate_limit import RateLimiter

REPORT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
CURSOR = re.compile(r"^[0-9]{1,18}$")
NOT_FOUND = {"detail": "Not Found"}
AUTH_HEADERS = {"WWW-Authenticate": 'Basic realm="tipline agencies", charset="UTF-8"'}
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
}
AUDITED_QUERY = ("since", "before", "priority", "limit", "jurisdiction")
log = logging.getLogger(__name__)


class NotVisible(Exception):
    """The report is absent or outside the caller's jurisdictions: answered as 404 either way."""


def summary_item(row, acknowledged):
    return {"reportId": row["report_id"], "submittedAt": row["submitted_at"], "priority": row["priority"],
            "incidentType": row["incident_type"], "matchSummary": row["match_summary"], "bundleId": row["bundle_id"],
            "jurisdiction": row["jurisdiction"], "acknowledged": acknowledged, "cursor": str(row["feed_seq"])}


def parse_cursor(value, name):
    if value is None:
        return None
    if not CURSOR.match(value):
        raise HTTPException(400, f"{name} must be a cursor returned by this service")
    return int(value)


class Refresher:
    """Runs `tasks` every `seconds` in a thread: re-indexing the routed output, so files written while the
    pipeline runs appear, and re-reading a changed agencies table."""

    def __init__(self, tasks, seconds):
        self.tasks, self.seconds = tasks, seconds
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="agencies-refresh", daemon=True)

    def _loop(self):
        while not self.stopped.wait(self.seconds):
            for task in self.tasks:
                try:
                    task()
                except Exception:  # a bad file must not stop the service; the next round retries
                    log.exception("%s failed", task.__qualname__)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join()


def create_app(index, directory, audit, *, rate=20.0, burst=60, refresh_seconds=5.0):
    """The ASGI app over `index` (a ReportIndex), `directory` (AgencyDirectory or WatchedDirectory) and `audit` (AuditLog)."""
    limiter = RateLimiter(rate, burst)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        index.refresh()
        tasks = [index.refresh] + ([directory.reload_if_changed] if hasattr(directory, "reload_if_changed") else [])
        with Refresher(tasks, refresh_seconds):
            yield

    app = FastAPI(title="tipline agencies", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def rate_limit_audit_and_headers(request: Request, call_next):
        client = request.client.host if request.client else "unknown"
        request.state.agency_id = request.state.claimed = None
        request.state.served = None
        if limiter.allow(client):
            try:
                response = await call_next(request)
            except Exception:  # answered and audited like any call; the cause goes to the service's log
                log.exception("%s %s failed", request.method, request.url.path)
                response = JSONResponse({"detail": "Internal Server Error"}, 500)
        else:
            response = JSONResponse({"detail": "Too Many Requests"}, 429,
                                    headers={"Retry-After": str(limiter.retry_after_seconds())})
        response.headers.update(SECURITY_HEADERS)
        audit.append(audit_entry(request, client, response.status_code))
        return response

    def caller(request: Request):
        claimed = credential_from_header(request.headers.get("authorization"))
        if claimed is None:
            credentials.spend_one_derivation()
            agency = None
        else:
            request.state.claimed = claimed[0]
            agency = directory.authenticate(*claimed)
        if agency is None:
            raise HTTPException(401, "Not authenticated", headers=AUTH_HEADERS)
        request.state.agency_id = agency.agency_id
        return agency

    def visible_report(agency, report_id):
        found = index.get_for(agency.jurisdictions, report_id) if REPORT_ID.match(report_id) else None
        if found is None:
            raise NotVisible()
        return found

    @app.exception_handler(NotVisible)
    async def not_visible(request, exc):
        return not_found(request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        if exc.status_code == 404:
            return not_found(request)
        return await http_exception_handler(request, exc)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    def list_reports(request, agency, since, before, priority, limit, jurisdiction):
        codes = agency.jurisdictions if jurisdiction is None else [c for c in agency.jurisdictions if c == jurisdiction]
        rows = index.list_for(codes, since=parse_cursor(since, "since"), before=parse_cursor(before, "before"),
                              priority=priority, limit=limit)
        acknowledged = index.acknowledged_by(agency.agency_id, [row["report_id"] for row in rows])
        request.state.served = [row["report_id"] for row in rows]
        return [summary_item(row, row["report_id"] in acknowledged) for row in rows]

    @app.get("/reports")
    def reports(request: Request, agency=Depends(caller), since: str | None = None, before: str | None = None,
                priority: Literal["P1", "P2", "P3"] | None = None, limit: int = Query(100, ge=1, le=500),
                jurisdiction: str | None = None):
        items = list_reports(request, agency, since, before, priority, limit, jurisdiction)
        if since is not None:
            following = {"since": items[-1]["cursor"] if items else since}
        else:
            following = {"before": items[-1]["cursor"]} if len(items) == limit else None
        return Response(orjson.dumps({"agency": agency.agency_id, "reports": items, "next": following}),
                        media_type="application/json")

    @app.get("/reports/{report_id}")
    def report(request: Request, report_id: str, agency=Depends(caller)):
        found = visible_report(agency, report_id)
        request.state.served = [report_id]
        return {"report": found["record"], "jurisdiction": found["jurisdiction"], "referrals": found["referrals"],
                "acknowledged": bool(index.acknowledged_by(agency.agency_id, [report_id]))}

    @app.post("/reports/{report_id}/ack")
    def acknowledge(request: Request, report_id: str, agency=Depends(caller)):
        refuse_cross_site(request)
        found = visible_report(agency, report_id)
        index.acknowledge(agency.agency_id, report_id, found["jurisdiction"])
        request.state.served = [report_id]
        return {"reportId": report_id, "acknowledged": True}

    @app.get("/ui", response_class=HTMLResponse)
    def page_list(request: Request, agency=Depends(caller), priority: Literal["P1", "P2", "P3"] | None = None,
                  before: str | None = None):
        items = list_reports(request, agency, None, before, priority, 100, None)
        return pages.report_list(agency, items, priority, index.count_for(agency.jurisdictions, priority))

    @app.get("/ui/reports/{report_id}", response_class=HTMLResponse)
    def page_detail(request: Request, report_id: str, agency=Depends(caller)):
        found = visible_report(agency, report_id)
        request.state.served = [report_id]
        acknowledged = bool(index.acknowledged_by(agency.agency_id, [report_id]))
        return pages.report_detail(agency, found, acknowledged)

    return app


def refuse_cross_site(request):
    """A browser sends a cached Basic credential with any page's form post: only this service's own pages may write."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise HTTPException(403, "cross-site request refused")
    if request.headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
        raise HTTPException(403, "cross-site request refused")


def not_found(request):
    """The one 404: the same for a report that does not exist, one outside the caller's jurisdictions, and no route."""
    if request.url.path.startswith("/ui/"):
        return HTMLResponse(pages.NOT_FOUND_PAGE, 404)
    return JSONResponse(NOT_FOUND, 404)


def audit_entry(request, client, status):
    """One audit line: who (the verified agency, or none and the agency id claimed), what (method, route, report
    id, query), when, and the answer (status, the report ids shown)."""
    route = request.scope.get("route")
    return {"at": iso(utc_now()), "agency": request.state.agency_id, "claimed": request.state.claimed,
            "client": client, "method": request.method,
            "route": route.path if route else "(no route)",
            "reportId": (request.path_params or {}).get("report_id"),
            "query": {key: request.query_params[key][:64] for key in AUDITED_QUERY if key in request.query_params},
            "status": status, "served": request.state.served, **({} if route else {"path": request.url.path[:200]})}
