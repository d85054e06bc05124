"""The intake service end to end: provider reports over HTTP -> finished -> on the Pub/Sub emulator.

Starts the emulator and `tipline serve intake` in its own process (--workers uvicorn workers), then a load
generator (this process, asyncio writing prebuilt HTTP/1.1 requests on keep-alive connections, or httpx
with --client httpx; --concurrency reports in flight) reports --count reports, each
submit -> upload (one small benign JPEG) -> fileinfo -> finish. Prints:

- reports accepted per second end to end: finished reports / time until the last one is on the topic (the
  latest publish time the emulator gave them, read by pulling the subscription afterwards), the goal being
  >= 500/s on 2 cores;
- p50 / p99 latency of `submit`, and of a whole report;
- the CPU the service (all its processes), the load generator and the emulator spent a report: the figures that
  depend least on how busy the shared machine is;
- the baselines measured in the same run: the same client doing 4 `GET /status` per report (the HTTP
  stack and authentication alone), and publishing the same messages straight to the emulator.

    .venv/bin/python benchmarks/bench_intake.py                  # 2,000 reports, 32 in flight
    .venv/bin/python benchmarks/bench_intake.py --count 4000 --workers 2
    .venv/bin/python benchmarks/bench_intake.py --profile       # one worker under cProfile: where its CPU goes
"""
import argparse
import asyncio
import base64
import io
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import httpx

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines import emulator  # noqa: E402
from pipelines.publish import ensure_subscription, ensure_topic  # noqa: E402
from services.common.credentials import add_account  # noqa: E402
from services.intake.provider_client import file_details_xml, parse_response, report_xml  # noqa: E402
from transforms.demo.synthetic_images import make_image  # noqa: E402

PROJECT, USER, PASSWORD = "tipline-bench", "esp-bench", "bench password"
XML = {"Content-Type": "text/xml; charset=utf-8"}
XML_TYPE, FORM_TYPE = b"text/xml; charset=utf-8", b"application/x-www-form-urlencoded"


def small_jpeg(seed):
    buffer = io.BytesIO()
    make_image(seed, 96).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def checked(response):
    answer = parse_response(response)
    if answer["responseCode"] != 0:
        raise RuntimeError(f"refused: {answer}")
    return answer


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for this service's answers.

    The benchmark shares the machine's 2 cores with the service and the emulator: httpx spent ~15 ms of CPU
    a report here, more than the service itself, so the load generator writes prebuilt requests and reads
    Content-Length answers (`--client httpx` measures with httpx instead)."""

    def __init__(self, host, port):
        self.host, self.port, self.reader, self.writer = host, port, None, None
        self.head = (f"Host: {host}:{port}\r\nAuthorization: Basic "
                     f"{base64.b64encode(f'{USER}:{PASSWORD}'.encode()).decode()}\r\n").encode()

    async def request(self, method, path, body=b"", content_type=None):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        kind = b"Content-Type: %s\r\n" % content_type if content_type else b""
        self.writer.write(b"%s %s HTTP/1.1\r\n%s%sContent-Length: %d\r\n\r\n%s"
                          % (method, path, self.head, kind, len(body), body))
        headers = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        length = int(re.search(rb"content-length: *(\d+)", headers).group(1))
        answer = await self.reader.readexactly(length)
        if b"connection: close" in headers:
            self.writer.close()
            self.writer = None
        return answer

    async def close(self):
        if self.writer is not None:
            self.writer.close()


def answer_fields(answer):
    fields = {name.decode(): value.decode() for name, value in re.findall(rb"<(\w+)>([^<]*)</\1>", answer)}
    if fields.get("responseCode") != "0":
        raise RuntimeError(f"refused: {answer[:300]!r}")
    return fields


def multipart_upload(report_id, image):
    boundary = b"benchboundary7d3f"
    body = (b"--%s\r\nContent-Disposition: form-data; name=\"id\"\r\n\r\n%s\r\n"
            b"--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n%s\r\n--%s--\r\n") % (boundary, report_id, boundary, image, boundary)
    return body, b"multipart/form-data; boundary=" + boundary


REPORT = report_xml()


async def one_report(connection, image, submit_times, report_times):
    started = time.perf_counter()
    answer = answer_fields(await connection.request(b"POST", b"/submit", REPORT, XML_TYPE))
    submit_times.append(time.perf_counter() - started)
    report_id = answer["reportId"].encode()
    upload = answer_fields(await connection.request(b"POST", b"/upload", *multipart_upload(report_id, image)))
    details = file_details_xml(answer["reportId"], upload["fileId"], upload["hash"])
    answer_fields(await connection.request(b"POST", b"/fileinfo", details, XML_TYPE))
    answer_fields(await connection.request(b"POST", b"/finish", b"id=" + report_id, FORM_TYPE))
    report_times.append(time.perf_counter() - started)


async def four_status_calls(connection, *_):
    for _ in range(4):
        answer_fields(await connection.request(b"GET", b"/status"))


async def one_report_httpx(http, image, submit_times, report_times):
    started = time.perf_counter()
    answer = checked(await http.post("/submit", content=REPORT, headers=XML))
    submit_times.append(time.perf_counter() - started)
    report_id = answer["reportId"]
    upload = checked(await http.post("/upload", data={"id": report_id}, files={"file": ("f.jpg", image)}))
    await http.post("/fileinfo", content=file_details_xml(report_id, upload["fileId"], upload["hash"]), headers=XML)
    checked(await http.post("/finish", data={"id": report_id}))
    report_times.append(time.perf_counter() - started)


async def four_status_calls_httpx(http, *_):
    for _ in range(4):
        checked(await http.get("/status"))


async def drive(url, count, concurrency, work, images, client="raw"):
    """Runs `work` `count` times with `concurrency` in flight; (seconds, submit latencies, report latencies)."""
    submit_times, report_times, queue = [], [], iter(range(count))
    if client == "httpx":
        work = {one_report: one_report_httpx, four_status_calls: four_status_calls_httpx}[work]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, auth=(USER, PASSWORD), limits=limits, timeout=120) as http:
        async def worker():
            host, port = url.removeprefix("http://").split(":")
            connection = http if client == "httpx" else Connection(host, int(port))
            try:
                for index in queue:
                    await work(connection, images[index % len(images)], submit_times, report_times)
            finally:
                if client != "httpx":
                    await connection.close()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, submit_times, report_times


def count_until(subscription, expected, patience=300):
    """(how many of `expected` messages arrived, the latest publish time among them in epoch seconds): pulled
    and acknowledged until all came or `patience` seconds passed. The publish time is the emulator's own, so
    pulling after the run (in large pulls that cost the emulator little) still times when each was accepted."""
    from google.cloud import pubsub_v1

    subscriber, seen, latest, started = pubsub_v1.SubscriberClient(), 0, 0.0, time.perf_counter()
    while seen < expected and time.perf_counter() - started < patience:
        received = subscriber.pull(subscription=subscription, max_messages=1000, timeout=30).received_messages
        if received:
            subscriber.acknowledge(subscription=subscription, ack_ids=[item.ack_id for item in received])
            seen += len(received)
            latest = max(latest, *(item.message.publish_time.timestamp() for item in received))
    return seen, latest


def cpu_seconds(pid):
    """User + system CPU seconds so far of a process and its children (the uvicorn workers); load on the
    machine does not inflate it."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(cpu_seconds(int(child)) for child in children)


def own_cpu_seconds():
    times = os.times()
    return times.user + times.system


PROFILED_SERVICE = """
import cProfile, signal, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
from pipelines.cli import main
profile_to, sys.argv = sys.argv[1], ["tipline", *sys.argv[2:]]
cProfile.run("main()", profile_to)
"""


def start_service(workdir, topic, port, workers, publish_batch_ms, profile_to=None):
    """The service in its own process; with `profile_to`, one worker under cProfile writing its profile there."""
    credentials = workdir / "providers.jsonl"
    add_account(credentials, USER, "Bench Social", PASSWORD)
    tipline = [str(REPO / ".venv" / "bin" / "tipline")]
    if profile_to:  # uvicorn re-raises SIGTERM after its clean stop: an exit, so cProfile still writes
        tipline = [sys.executable, "-c", PROFILED_SERVICE, str(profile_to)]
    process = subprocess.Popen(
        [*tipline, "serve", "intake", "--port", str(port), "--credentials",
         str(credentials), "--store", str(workdir / "intake.sqlite"), "--quarantine-root", str(workdir / "quarantine"),
         "--project", PROJECT, "--topic", topic, "--provider-rate", "1000000", "--workers", str(workers),
         "--publish-batch-ms", str(publish_batch_ms)],
        start_new_session=True)
    deadline = time.monotonic() + 300  # a loaded machine takes its time to start workers
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/status", auth=(USER, PASSWORD), timeout=2)
            return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the intake service did not start")


def direct_publish_rate(topic, count):
    """Reports/s publishing the same kind of message straight to the emulator (no HTTP, no store)."""
    from google.cloud import pubsub_v1

    from pipelines.publish import publish
    from tests.conftest import example_report
    import json

    message = json.dumps(example_report()).encode()
    publisher = pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(max_messages=500,
                                                                                       max_latency=0.01))
    started = time.perf_counter()
    publish(iter([message] * count), topic, publisher=publisher)
    return count / (time.perf_counter() - started)


def print_profile(path, lines=30):
    import pstats

    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(lines)
    stats.sort_stats("cumulative").print_stats(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="the service's worker processes")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw",
                        help="load generator: prebuilt HTTP/1.1 requests (raw) or httpx")
    parser.add_argument("--publish-batch-ms", type=float, default=50, help="the service's --publish-batch-ms")
    parser.add_argument("--profile", action="store_true",
                        help="run the service (one worker) under cProfile and print where its time went")
    args = parser.parse_args()
    if args.profile and args.workers != 1:
        parser.error("--profile profiles one worker: leave --workers at 1")
    from google.cloud import pubsub_v1

    images = [small_jpeg(seed) for seed in range(50)]
    with emulator.running() as pubsub, tempfile.TemporaryDirectory(prefix="bench-intake-") as folder:
        workdir = pathlib.Path(folder)
        topic, subscription = f"projects/{PROJECT}/topics/intake", f"projects/{PROJECT}/subscriptions/intake"
        ensure_topic(pubsub_v1.PublisherClient(), topic)
        ensure_subscription(pubsub_v1.SubscriberClient(), subscription, topic)
        port = emulator.free_port()
        profile_to = workdir / "service.prof" if args.profile else None
        service = start_service(workdir, topic, port, args.workers, args.publish_batch_ms, profile_to)
        url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(drive(url, min(200, args.count), args.concurrency, one_report, images, args.client))  # warm-up
            count_until(subscription, min(200, args.count))
            status_cpu = cpu_seconds(service.pid)
            status_seconds, _, _ = asyncio.run(drive(url, args.count, args.concurrency, four_status_calls, images,
                                                     args.client))
            status_cpu = cpu_seconds(service.pid) - status_cpu
            started, service_cpu, client_cpu = time.time(), cpu_seconds(service.pid), own_cpu_seconds()
            emulator_cpu = cpu_seconds(pubsub.process.pid)
            seconds, submits, reports = asyncio.run(drive(url, args.count, args.concurrency, one_report, images,
                                                             args.client))
            client_cpu = own_cpu_seconds() - client_cpu
            service_cpu = cpu_seconds(service.pid) - service_cpu
            emulator_cpu = cpu_seconds(pubsub.process.pid) - emulator_cpu
            on_topic, last_accepted = count_until(subscription, args.count)
            end_to_end = last_accepted - started
        finally:
            service.terminate()  # uvicorn stops cleanly on SIGTERM, so cProfile writes its profile
            service.wait(timeout=30)
        if profile_to:
            print_profile(profile_to)
        direct = direct_publish_rate(topic, args.count)
    accepted = on_topic / end_to_end
    print(f"\n{args.client} load generator; {args.count} reports "
          f"(one {sum(map(len, images)) // len(images):,}-byte JPEG each), "
          f"{args.concurrency} in flight, os.cpu_count() = {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    print(f"end to end: {on_topic} reports on the topic in {end_to_end:.1f} s = {accepted:,.0f} reports/s "
          f"(HTTP part {args.count / seconds:,.0f}/s; goal >= 500/s)")
    print(f"submit latency p50 {percentile(submits, 0.5) * 1000:.1f} ms, p99 {percentile(submits, 0.99) * 1000:.1f} ms;"
          f" whole report p50 {percentile(reports, 0.5) * 1000:.1f} ms, p99 {percentile(reports, 0.99) * 1000:.1f} ms")
    print(f"service CPU per report {service_cpu / args.count * 1000:.2f} ms (one core: {args.count / service_cpu:,.0f} "
          f"reports/s at most); per 4 GET /status {status_cpu / args.count * 1000:.2f} ms; "
          f"load generator CPU per report {client_cpu / args.count * 1000:.2f} ms; "
          f"the emulator's CPU per report {emulator_cpu / args.count * 1000:.2f} ms")
    print(f"baseline, 4 GET /status per report: {args.count / status_seconds:,.0f} 'reports'/s "
          f"(ratio {accepted / (args.count / status_seconds):.2f}); "
          f"publishing straight to the emulator: {direct:,.0f}/s (ratio {accepted / direct:.2f})")


if __name__ == "__main__":
    main()
