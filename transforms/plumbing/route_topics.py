"""PublishRoutedToTopics: each routed record to its jurisdiction's Pub/Sub topic, as JSON with no media.

`--route-topic-template projects/P/topics/tips-{jurisdiction}` names the topic; jurisdiction codes are
made topic-safe (`US-CA-LA` stays, anything outside [A-Za-z0-9-_.~+%] becomes `_`). A bundle commits only
after every publish in it is confirmed, so a report is on its topic before its message is acknowledged.
"""
import json
import re

import apache_beam as beam

from transforms.plumbing.metrics import counter


UNSAFE = re.compile(r"[^A-Za-z0-9\-_.~+%]")


def route_topic(template, jurisdiction):
    return template.format(jurisdiction=UNSAFE.sub("_", jurisdiction))


class _PublishFn(beam.DoFn):
    def __init__(self, template, create_topics):
        self.template = template
        self.create_topics = create_topics
        self.published = counter("published_to_topics")

    def setup(self):
        from google.cloud import pubsub_v1

        self.publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=500, max_latency=0.01))
        self.known_topics = set()

    def start_bundle(self):
        self.futures = []

    def process(self, record):
        topic = route_topic(self.template, record["jurisdiction"])
        if self.create_topics and topic not in self.known_topics:
            self._ensure(topic)
        data = json.dumps(record, sort_keys=True, ensure_ascii=False).encode("utf-8")
        self.futures.append(self.publisher.publish(
            topic, data, reportId=record["reportId"], jurisdiction=record["jurisdiction"]))

    def _ensure(self, topic):
        from google.api_core.exceptions import AlreadyExists

        try:
            self.publisher.create_topic(name=topic)
        except AlreadyExists:
            pass
        self.known_topics.add(topic)

    def finish_bundle(self):
        for future in self.futures:
            future.result(timeout=120)
        self.published.inc(len(self.futures))
        self.futures = []

    def teardown(self):
        self.publisher.stop()


class PublishRoutedToTopics(beam.PTransform):
    """Publishes routed records to `template.format(jurisdiction=...)`; `create_topics` for local runs."""

    def __init__(self, template, create_topics=False):
        super().__init__()
        if "{jurisdiction}" not in template:
            raise ValueError("--route-topic-template needs {jurisdiction}, e.g. projects/P/topics/tips-{jurisdiction}")
        self.template = template
        self.create_topics = create_topics

    def expand(self, records):
        return records | "Publish" >> beam.ParDo(_PublishFn(self.template, self.create_topics))
