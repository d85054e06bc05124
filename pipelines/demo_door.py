"""The intake door in `tipline demo --pubsub`: the intake service and a scripted provider reporting through it.

The provider speaks the CyberTipline reporting API over HTTP (submit, upload, fileinfo, finish) with synthetic
reports and benign synthetic JPEGs; a member of the public sends one report. Everything lives in a temporary
folder (store, credentials, quarantine) removed at the end; the pipeline reads media from that quarantine
store (`--media-root`).
"""
import contextlib
import io
import os
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path

DOOR_PROVIDER = "esp-door-demo"


def scripted_provider(client, seconds, rate, outcome):
    """Reports synthetic reports (one benign synthetic JPEG each) through the door for `seconds`."""
    from services.intake.provider_client import file_details_xml, report_xml
    from transforms.demo.synthetic import SyntheticConfig, synthetic_report
    from transforms.demo.synthetic_images import make_image

    config, start = SyntheticConfig(seed=4242), time.monotonic()
    outcome.update(finished=0, failed=0)
    for index in range(10**9):
        if time.monotonic() - start >= seconds:
            return
        time.sleep(max(0.0, index / rate - (time.monotonic() - start)))
        report = synthetic_report(config, index).report
        events = (report.get("personOrUserReported") or {}).get("ipCaptureEvents") or [{}]
        ip = events[0].get("ipAddress") or "81.2.69.142"
        jpeg = io.BytesIO()
        make_image(10_000 + index, 256).save(jpeg, format="JPEG", quality=85)
        try:
            report_id = client.submit(report_xml(incident_type=report["incidentSummary"]["incidentType"], ip=ip))
            file_id, md5 = client.upload(report_id, f"{index}.jpg", jpeg.getvalue())
            client.fileinfo(file_details_xml(report_id, file_id, md5, ip=ip))
            client.finish(report_id)
            outcome["finished"] += 1
        except Exception as error:  # the demo goes on; the count says what failed
            outcome["failed"] += 1
            outcome["error"] = f"{type(error).__name__}: {error}"


@contextlib.contextmanager
def intake_door(topic, seconds, rate):
    """The intake service on a free port and a scripted provider reporting through it; yields the outcome."""
    import httpx

    from services.common.background import BackgroundServer
    from services.common.credentials import add_account, load_accounts
    from services.intake.app import IntakeConfig, create_app
    from services.intake.provider_client import CyberTiplineClient

    workdir = tempfile.mkdtemp(prefix="tipline-intake-demo-")
    password = secrets.token_urlsafe(16)
    add_account(os.path.join(workdir, "providers.jsonl"), DOOR_PROVIDER, "Door Demo Social", password)
    config = IntakeConfig(store_path=os.path.join(workdir, "intake.sqlite"),
                          quarantine_root=os.path.join(workdir, "quarantine"),
                          accounts=load_accounts(os.path.join(workdir, "providers.jsonl")), topic=topic)
    outcome = {"started": time.time(), "quarantine": config.quarantine_root}
    try:
        with BackgroundServer(create_app(config)) as server:
            print(f"intake service on {server.url}; quarantine store {config.quarantine_root}", flush=True)
            client = CyberTiplineClient(server.url, DOOR_PROVIDER, password)
            provider = threading.Thread(daemon=True, target=scripted_provider, args=(client, seconds, rate, outcome))
            provider.start()
            public = httpx.post(f"{server.url}/public/report", timeout=30, json={
                "incidentSummary": {"incidentType": "Online Enticement of Children for Sexual Acts"},
                "personOrUserReported": {"screenName": "someone", "ipCaptureEvents": [{"ipAddress": "81.2.69.160"}]}})
            outcome["public"] = public.json().get("reportId")
            yield outcome
            provider.join()
            client.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def print_door_outcome(outcome, output_dir):
    """What the door took and how much of it the pipeline routed (routed files written by this run)."""
    import fastavro

    routed = public = 0
    for path in Path(output_dir, "routed").rglob("*.avro"):
        if path.stat().st_mtime < outcome["started"]:
            continue
        with path.open("rb") as handle:
            for record in fastavro.reader(handle):
                routed += int(record["espId"] == DOOR_PROVIDER)
                public += int(record["reportId"] == outcome.get("public"))
    error = f": {outcome['error']}" if outcome.get("error") else ""
    print(f"through the intake door: {outcome['finished']} provider reports finished "
          f"({outcome['failed']} failed{error}),"
          f" {routed} of them routed; public report {outcome.get('public')} {'routed' if public else 'not routed'}")
