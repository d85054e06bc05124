"""The intake service's HTTP endpoints (Starlette): the CyberTipline reporting API, a JSON door, public reports.

Nothing reaches Pub/Sub before `finish`: submit, upload and fileinfo only fill the store; finish
assembles the contract report, marks it finished and publishes it with the `reportId` and `submittedAt`
attributes. Every refusal is an XML `reportResponse` (JSON on the JSON endpoints) with a non-zero
`responseCode` and a description; no request body, credential or media byte is logged.
"""
import asyncio
import base64
import binascii
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.common.credentials import BasicAuthenticator
from services.common.http import BodyTooLarge, client_address, read_body
from services.common.rate_limit import SharedBuckets
from services.intake.quarantine import QuarantineStore
from services.intake.store import REPORT_ID_PREFIX, IntakeStore, Refused, now_rfc3339
from services.intake.xml_mapping import InvalidDocument, MalformedXml, file_details_from_xml, report_from_xml

log = logging.getLogger("tipline.intake")

SUCCESS, SERVER_ERROR = 0, 1000
AUTHENTICATION_REQUIRED = 2000
INVALID_REQUEST, VALIDATION_FAILED, MALFORMED_XML = 4000, 4100, 4110
DOCUMENT_TOO_LARGE, FILE_TOO_LARGE, RATE_LIMITED = 4120, 4210, 4290
REPORT_DOES_NOT_EXIST = 5001
HTTP_STATUS = {AUTHENTICATION_REQUIRED: 401, 3000: 403, INVALID_REQUEST: 400, VALIDATION_FAILED: 400,
               MALFORMED_XML: 400, DOCUMENT_TOO_LARGE: 413, FILE_TOO_LARGE: 413, 4220: 409, RATE_LIMITED: 429,
               REPORT_DOES_NOT_EXIST: 404, 5002: 404, 5101: 409, 5102: 409, SERVER_ERROR: 500}
XML_TYPES = ("text/xml", "application/xml")
FAILED_LOGINS_PER_SECOND, FAILED_LOGIN_BURST = 1.0, 10.0  # per client address
CONFIRMATIONS_EVERY_SECONDS = 0.05
PUBLIC_FIELDS = ("incidentSummary", "internetDetails", "personOrUserReported", "victims", "batchedReport", "files")


@dataclass
class IntakeConfig:
    store_path: str
    quarantine_root: str
    accounts: dict
    topic: str
    max_document_bytes: int = 1 * 2**20
    max_upload_bytes: int = 25 * 2**20
    max_files_per_report: int = 100
    provider_rate: float = 200.0
    provider_burst: float = 400.0
    public_rate: float = 1.0
    public_burst: float = 5.0
    outbox_seconds: float = 5.0
    outbox_after_seconds: float = 30.0
    publish_batch_seconds: float = 0.05


class ApiRefusal(Exception):
    def __init__(self, code, description, report_id=None):
        super().__init__(description)
        self.code, self.description, self.report_id = code, description, report_id


def xml_document(root, fields):
    body = "".join(f"<{name}>{escape(str(value))}</{name}>" for name, value in fields if value is not None)
    return f'<?xml version="1.0" encoding="UTF-8"?><{root}>{body}</{root}>'


def report_response(code, description, status=200, **fields):
    document = xml_document("reportResponse", [("responseCode", code), ("responseDescription", description),
                                               *fields.items()])
    headers = {"WWW-Authenticate": 'Basic realm="tipline intake"'} if code == AUTHENTICATION_REQUIRED else None
    return Response(document, status_code=status, media_type="text/xml", headers=headers)


def refusal_response(refusal, done=False, as_json=False):
    status = HTTP_STATUS.get(refusal.code, 400)
    log.info("refused with %d: %s", refusal.code, refusal.description)
    if as_json:
        return JSONResponse({"responseCode": refusal.code, "responseDescription": refusal.description},
                            status_code=status)
    if done:
        document = xml_document("reportDoneResponse", [("responseCode", refusal.code), ("reportId", refusal.report_id),
                                                      ("responseDescription", refusal.description)])
        return Response(document, status_code=status, media_type="text/xml")
    return report_response(refusal.code, refusal.description, status, reportId=refusal.report_id)


def numeric_id(value, name="id"):
    if not isinstance(value, str) or not value.strip().isdigit() or len(value.strip()) > 18:
        raise ApiRefusal(INVALID_REQUEST, f"{name} must be a report id (a positive integer)")
    return int(value.strip())


class Intake:
    """The service's state: store, quarantine, publisher, authenticator and rate limits.

    Rate limits live in a file beside the store (`<store>-limits`) that every worker process maps, so they
    hold across `--workers`.

    Store calls run on the event loop: SQLite in WAL mode commits without an fsync in well under a
    millisecond, less than a hop to the threadpool; media writes (fsync) and scrypt go to the threadpool.
    """

    def __init__(self, config, publisher=None):
        from transforms.reports.validation import ReportValidator

        self.config = config
        self.store = IntakeStore(config.store_path)
        self.quarantine = QuarantineStore(config.quarantine_root)
        self.authenticator = BasicAuthenticator(config.accounts)
        self.buckets = SharedBuckets(f"{config.store_path}-limits")
        self.provider_limits = self.buckets.limiter("provider", config.provider_rate, config.provider_burst)
        self.public_limits = self.buckets.limiter("public", config.public_rate, config.public_burst)
        self.failed_logins = self.buckets.limiter("failed-login", FAILED_LOGINS_PER_SECOND, FAILED_LOGIN_BURST)
        self.validator = ReportValidator(config.max_files_per_report)
        self.publisher = publisher or _publisher(config.publish_batch_seconds)
        self.in_flight, self.confirmed, self.confirmations = set(), [], None

    async def provider(self, request):
        """The authenticated provider, or a refusal: bad credentials look the same whether the user exists or not."""
        address, header = client_address(request), request.headers.get("authorization")
        user = self.authenticator.remembered_user(header)
        if user is None:
            if self.failed_logins.exhausted(address):  # refused before the costly scrypt
                raise ApiRefusal(RATE_LIMITED, "too many failed logins from this address; slow down")
            user = await run_in_threadpool(self.authenticator.user_of, header)
        if user is None:
            self.failed_logins.allow(address)
            raise ApiRefusal(AUTHENTICATION_REQUIRED, "authentication required: missing or wrong credentials")
        if not self.provider_limits.allow(user):
            raise ApiRefusal(RATE_LIMITED,
                             f"rate limit of {self.config.provider_rate:g} requests/s exceeded; retry later")
        return user

    async def xml_body(self, request):
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in XML_TYPES:
            raise ApiRefusal(INVALID_REQUEST, f"content type {media_type[:60]!r} is not text/xml or application/xml")
        return await self.body(request, self.config.max_document_bytes, DOCUMENT_TOO_LARGE)

    async def body(self, request, limit, code):
        try:
            return await read_body(request, limit)
        except BodyTooLarge as error:
            raise ApiRefusal(code, str(error)) from None

    def check_contract(self, report):
        """Refuses what the pipeline would dead-letter, naming the field."""
        from transforms.reports.avro_validation import InvalidRecord

        try:
            self.validator.validate(report)
        except InvalidRecord as error:
            raise ApiRefusal(VALIDATION_FAILED, f"not a valid report: {error}") from None

    async def publish(self, report_id, message):
        """Publishes a finished report; a confirmed publish is recorded with the others of the next
        `CONFIRMATIONS_EVERY_SECONDS` in one transaction, a failure leaves the report to the outbox."""
        report = orjson.loads(message)
        self.in_flight.add(report_id)
        try:
            future = self.publisher.publish(self.config.topic, message, reportId=report["reportId"],
                                            submittedAt=report["submittedAt"])
            await asyncio.wrap_future(future)
        except Exception as error:  # the outbox retries; the report is durably finished
            self.in_flight.discard(report_id)
            log.warning("publish of report %s failed (%s); the outbox will retry", report_id, type(error).__name__)
            return
        self.confirmed.append(report_id)
        if self.confirmations is None:
            self.confirmations = asyncio.get_running_loop().call_later(CONFIRMATIONS_EVERY_SECONDS,
                                                                       self.record_confirmed)

    def record_confirmed(self):
        """Marks the confirmed publishes published. Until then they stay in flight, so the outbox leaves them
        alone; a stop before it means the outbox publishes them again, which the pipeline drops by reportId."""
        confirmed, self.confirmed, self.confirmations = self.confirmed, [], None
        try:
            if confirmed:
                self.store.mark_published(confirmed)
        finally:
            self.in_flight.difference_update(confirmed)

    async def drain_outbox(self):
        """Publishes finished reports whose publish failed or was cut short by a stop, never one in flight."""
        for report_id, message in self.store.unpublished(self.config.outbox_after_seconds):
            if report_id not in self.in_flight:
                await self.publish(report_id, message)

    async def outbox_loop(self):
        while True:
            with contextlib.suppress(Exception):
                await self.drain_outbox()
            await asyncio.sleep(self.config.outbox_seconds)


def _publisher(batch_seconds):
    """The Pub/Sub client, batching what is finished within `batch_seconds`: at 500 reports/s a 50-ms batch
    costs ~200 us of CPU a publish where a 10-ms one costs ~400."""
    from google.cloud import pubsub_v1

    return pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(max_messages=500,
                                                                                 max_latency=batch_seconds))


def create_app(config, publisher=None):
    intake = Intake(config, publisher)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        outbox = asyncio.create_task(intake.outbox_loop())
        try:
            yield
        finally:
            outbox.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await outbox
            if intake.confirmations is not None:
                intake.confirmations.cancel()
                intake.record_confirmed()
            intake.store.close()
            intake.buckets.close()

    async def status(request):
        await intake.provider(request)
        return report_response(SUCCESS, "Server is up and running")

    schema = (Path(__file__).parent / "intake.xsd").read_bytes()

    async def xsd(request):
        """The XML schema of the `report` and `fileDetails` documents this service takes."""
        await intake.provider(request)
        return Response(schema, media_type="text/xml")

    async def submit(request):
        provider = await intake.provider(request)
        draft = _mapped(report_from_xml, await intake.xml_body(request))
        intake.check_contract({"reportId": "IN-0", "submittedAt": now_rfc3339(), **draft,
                               "reporter": {**draft["reporter"], "espId": provider}})
        report_id = intake.store.open_report(provider, draft)
        return report_response(SUCCESS, "Success", reportId=report_id)

    async def upload(request):
        provider = await intake.provider(request)
        body = await intake.body(request, intake.config.max_upload_bytes + 64 * 1024, FILE_TOO_LARGE)
        form = await _multipart(request, body)
        report_id = numeric_id(form.get("id"))
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiRefusal(INVALID_REQUEST, "multipart field 'file' (a file) is required", report_id)
        data = await upload.read()
        if len(data) > intake.config.max_upload_bytes:
            raise ApiRefusal(FILE_TOO_LARGE, f"file exceeds the limit of {intake.config.max_upload_bytes} bytes",
                             report_id)
        if not data:
            raise ApiRefusal(4200, "the file is empty", report_id)
        intake.store.check_open(provider, report_id)
        uri, md5 = await intake.quarantine.put_off_loop(data)
        file_id = intake.store.add_file(provider, report_id, md5, uri, (upload.filename or "")[:255] or None,
                                        intake.config.max_files_per_report)
        return report_response(SUCCESS, "Success", reportId=report_id, fileId=file_id, hash=md5)

    async def fileinfo(request):
        provider = await intake.provider(request)
        report_text, file_text, details = _mapped(file_details_from_xml, await intake.xml_body(request))
        report_id, file_id = numeric_id(report_text, "reportId"), numeric_id(file_text, "fileId")
        intake.store.set_file_details(provider, report_id, file_id, details)
        return report_response(SUCCESS, "Success", reportId=report_id, fileId=file_id)

    async def finish(request):
        provider = await intake.provider(request)
        report_id = numeric_id(await _form_id(request, intake))
        try:
            message, file_ids = intake.store.finish(provider, report_id, intake.authenticator.name_of(provider))
        except Refused as refusal:
            raise ApiRefusal(refusal.code, refusal.description, report_id) from None
        await intake.publish(report_id, message)
        files = "".join(f"<fileId>{file_id}</fileId>" for file_id in file_ids)
        document = (f'<?xml version="1.0" encoding="UTF-8"?><reportDoneResponse><responseCode>0</responseCode>'
                    f"<reportId>{report_id}</reportId><files>{files}</files></reportDoneResponse>")
        return Response(document, media_type="text/xml")

    async def retract(request):
        provider = await intake.provider(request)
        report_id = numeric_id(await _form_id(request, intake))
        intake.store.retract(provider, report_id)
        return report_response(SUCCESS, "Success", reportId=report_id)

    async def direct_report(request):
        """A whole contract report in JSON, for new producers: published at once."""
        provider = await intake.provider(request)
        report = await _json_object(request, intake)
        reporter = report.get("reporter") if isinstance(report.get("reporter"), dict) else {}
        if reporter.get("espId") not in (None, provider):
            raise ApiRefusal(3000, "reporter.espId must be the authenticated provider")
        report["reporter"] = {**reporter, "kind": "esp", "espId": provider}
        intake.check_contract(report)
        if report["reportId"].startswith(REPORT_ID_PREFIX):
            raise ApiRefusal(VALIDATION_FAILED, f"reportIds starting with {REPORT_ID_PREFIX!r} are the intake's own")
        await run_in_threadpool(_quarantine_inline_media, intake.quarantine, report, intake.config.max_upload_bytes)
        intake.store.accept_direct(provider, report["reportId"])
        message = orjson.dumps(report)
        number, message = intake.store.add_finished(provider, lambda number: message)
        await intake.publish(number, message)
        return JSONResponse({"responseCode": SUCCESS, "reportId": report["reportId"]})

    async def public_report(request):
        """A report from a member of the public: no credentials, a per-address rate limit; JSON, or multipart
        with the JSON as the field `report` and up to --max-files-per-report `file`s, quarantined like a
        provider's uploads once the report is known to be valid."""
        if not intake.public_limits.allow(client_address(request)):
            raise ApiRefusal(RATE_LIMITED, "too many reports from this address; please try again later")
        submitted, uploads = await _public_submission(request, intake)
        report = {name: submitted[name] for name in PUBLIC_FIELDS if name in submitted}
        reporting_person = (submitted.get("reporter") or {}).get("reportingPerson") \
            if isinstance(submitted.get("reporter"), dict) else None
        report["reporter"] = {"kind": "public", **({"reportingPerson": reporting_person} if reporting_person else {})}
        if any(isinstance(file, dict) and (file.get("content") or file.get("contentUri"))
               for file in report.get("files") or []):
            raise ApiRefusal(VALIDATION_FAILED, "a JSON public report carries no media: attach files (multipart) "
                                                "or give where they are (locationOfFile)")
        files = list(report.get("files") or [])
        if len(files) + len(uploads) > intake.config.max_files_per_report:
            raise ApiRefusal(4220, f"more than {intake.config.max_files_per_report} files in one report")
        attached = [{"fileId": str(len(files) + index + 1), "fileName": name, "contentUri": "quarantine"}
                    for index, (name, _) in enumerate(uploads)]
        report["files"] = files + attached
        intake.check_contract({"reportId": "IN-0", "submittedAt": now_rfc3339(), **report})
        for file, (_, data) in zip(attached, uploads):
            file["contentUri"], _ = await intake.quarantine.put_off_loop(data)

        def build(number):
            report.update(reportId=intake.store.contract_report_id(number), submittedAt=now_rfc3339())
            return orjson.dumps(report)

        number, message = intake.store.add_finished("", build)
        await intake.publish(number, message)
        return JSONResponse({"responseCode": SUCCESS, "reportId": report["reportId"]})

    routes = [Route("/status", answering(status), methods=["GET"]), Route("/xsd", answering(xsd), methods=["GET"])]
    routes += [Route(f"/{endpoint.__name__}", answering(endpoint), methods=["POST"])
               for endpoint in (submit, upload, fileinfo, finish, retract)]
    routes += [Route("/v1/reports", answering(direct_report), methods=["POST"]),
               Route("/public/report", answering(public_report), methods=["POST"])]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.intake = intake
    return app


def _answer_for(path, refusal):
    return refusal_response(refusal, done=path == "/finish", as_json=path in ("/v1/reports", "/public/report"))


def answering(endpoint):
    """The endpoint, answering every refusal in its own format and an unforeseen failure with 1000, the
    connection kept; the log names the error type, never the request."""

    async def answer(request):
        try:
            return await endpoint(request)
        except ApiRefusal as refusal:
            return _answer_for(request.scope["path"], refusal)
        except Refused as refusal:
            return _answer_for(request.scope["path"], ApiRefusal(refusal.code, refusal.description))
        except Exception as error:
            log.error("%s %s failed: %s", request.method, request.scope["path"], type(error).__name__)
            failure = ApiRefusal(SERVER_ERROR, "server error; the request was not taken")
            return _answer_for(request.scope["path"], failure)

    return answer


def _mapped(mapping, data):
    try:
        return mapping(data)
    except MalformedXml as error:
        raise ApiRefusal(MALFORMED_XML, str(error)) from None
    except InvalidDocument as error:
        raise ApiRefusal(VALIDATION_FAILED, str(error)) from None


async def _multipart(request, body):
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ApiRefusal(INVALID_REQUEST, "upload must be multipart/form-data with the fields 'id' and 'file'")

    async def chunks():
        yield body

    try:
        return await MultiPartParser(request.headers, chunks(), max_files=1, max_fields=4, max_part_size=1024).parse()
    except MultiPartException as error:
        raise ApiRefusal(INVALID_REQUEST, f"multipart body refused: {error.message}") from None


async def _form_id(request, intake):
    """The `id` field of a urlencoded or multipart form."""
    body = await intake.body(request, 64 * 1024, DOCUMENT_TOO_LARGE)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        return (await _multipart(request, body)).get("id")
    if media_type != "application/x-www-form-urlencoded":
        raise ApiRefusal(INVALID_REQUEST, "send the report id as a form field 'id' (application/x-www-form-urlencoded)")
    try:
        values = parse_qs(body.decode("utf-8"), strict_parsing=False).get("id")
    except UnicodeDecodeError:
        raise ApiRefusal(INVALID_REQUEST, "form body is not UTF-8") from None
    return values[0] if values else None


async def _json_object(request, intake):
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiRefusal(INVALID_REQUEST, f"content type {media_type[:60]!r} is not application/json")
    body = await intake.body(request, intake.config.max_document_bytes, DOCUMENT_TOO_LARGE)
    from transforms.reports.validation import decode_message
    from transforms.reports.avro_validation import InvalidRecord

    try:
        return decode_message(body, intake.config.max_document_bytes)
    except InvalidRecord as error:
        raise ApiRefusal(VALIDATION_FAILED, str(error)) from None


async def _public_submission(request, intake):
    """(the report's JSON object, [(file name, bytes)]) of a JSON or multipart public report."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "multipart/form-data":
        return await _json_object(request, intake), []
    limits = intake.config
    body = await intake.body(request, limits.max_files_per_report * (limits.max_upload_bytes + 1024)
                             + limits.max_document_bytes, FILE_TOO_LARGE)

    async def chunks():
        yield body

    try:
        form = await MultiPartParser(request.headers, chunks(), max_files=limits.max_files_per_report, max_fields=2,
                                     max_part_size=limits.max_document_bytes).parse()
    except MultiPartException as error:
        code = 4220 if error.message.startswith("Too many files") else INVALID_REQUEST
        raise ApiRefusal(code, f"multipart body refused: {error.message}") from None
    document = form.get("report")
    if not isinstance(document, str):
        raise ApiRefusal(INVALID_REQUEST, "multipart public report needs the field 'report' (the report's JSON)")
    from transforms.reports.avro_validation import InvalidRecord
    from transforms.reports.validation import decode_message

    try:
        submitted = decode_message(document.encode("utf-8"), limits.max_document_bytes)
    except InvalidRecord as error:
        raise ApiRefusal(VALIDATION_FAILED, str(error)) from None
    uploads = []
    for name, upload in form.multi_items():
        if name != "file" or isinstance(upload, str):
            continue
        data = await upload.read()
        if len(data) > limits.max_upload_bytes:
            raise ApiRefusal(FILE_TOO_LARGE, f"file exceeds the limit of {limits.max_upload_bytes} bytes")
        if not data:
            raise ApiRefusal(4200, "a file is empty")
        uploads.append(((upload.filename or "")[:255] or None, data))
    return submitted, uploads


def _quarantine_inline_media(quarantine, report, max_bytes):
    """Moves inline `content` into the quarantine store; a producer's own contentUri is refused."""
    for index, file in enumerate(report.get("files") or []):
        if file.get("contentUri"):
            raise ApiRefusal(VALIDATION_FAILED, f"files[{index}].contentUri: send the bytes as content; "
                                                "the intake stores them in its quarantine store")
        if not file.get("content"):
            continue
        try:
            data = base64.b64decode(file["content"], validate=True)
        except (binascii.Error, ValueError):
            raise ApiRefusal(VALIDATION_FAILED, f"files[{index}].content is not valid base64") from None
        if len(data) > max_bytes:
            raise ApiRefusal(FILE_TOO_LARGE, f"files[{index}].content exceeds the limit of {max_bytes} bytes")
        file["contentUri"], _ = quarantine.put(data)
        file["content"] = None
