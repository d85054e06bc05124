"""deploy/metadata.json against the Flex Template parameter rules, and the launcher's arguments reaching
`tipline run` as it parses them.

The rules (Dataflow's TemplateMetadata / ParameterMetadata): a template name; each parameter a unique
name of letters, digits and underscores, a label, a help text, `isOptional` a boolean, `regexes` a list
of patterns; no other keys than the ones Dataflow defines. Here each parameter must also carry at least
one regex, compile, accept a real example and refuse a wrong value, and name an option `tipline run` knows.
"""
import json
import re

import pytest
from apache_beam.options.pipeline_options import PipelineOptions, WorkerOptions

from pipelines.flex_template import launcher_argv
from pipelines.options import TiplineOptions
from tests.conftest import REPO

METADATA = json.loads((REPO / "deploy" / "metadata.json").read_text())
PARAMETERS = {parameter["name"]: parameter for parameter in METADATA["parameters"]}
PARAMETER_KEYS = {"name", "label", "helpText", "isOptional", "regexes", "paramType", "parentName",
                  "parentTriggerValues", "groupName", "defaultValue", "enumOptions", "hiddenUi", "customMetadata"}
NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")

# One value the parameter must accept and one it must refuse.
EXAMPLES = {
    "source": ("pubsub", "synthetic"),
    "subscription": ("projects/tipline-prod/subscriptions/tips", "tips"),
    "input": ("gs://tipline-prod/replay/*.jsonl", "replay/*.jsonl"),
    "output": ("gs://tipline-prod/out", "/tmp/out"),
    "geoip_city_db": ("gs://tipline-ref/geoip/GeoIP2-City.mmdb", "/data/GeoIP2-City.mmdb"),
    "geoip_asn_db": ("gs://tipline-ref/geoip/GeoLite2-ASN.mmdb", "gs://tipline-ref/geoip/GeoLite2-ASN.csv"),
    "geoip_anonymous_db": ("gs://tipline-ref/geoip/GeoIP2-Anonymous-IP.mmdb", "GeoIP2-Anonymous-IP.mmdb"),
    "hash_bank": ("gs://tipline-ref/banks/known.parquet", "gs://tipline-ref/banks/known.json"),
    "negative_hash_bank": ("packaged:demo-negative-bank.csv", "benign.csv"),
    "bank_refresh_seconds": ("60", "-1"),
    "dedup_horizon_hours": ("24", "a day"),
    "window_minutes": ("60", "0"),
    "allowed_lateness_hours": ("1.5", "1,5"),
    "route_topic_template": ("projects/tipline-prod/topics/tips-{jurisdiction}", "projects/tipline-prod/topics/tips"),
    "sdk_container_image": ("europe-west1-docker.pkg.dev/tipline-prod/tipline/worker:2026-12-01", "worker image"),
}


def test_the_template_has_a_name_and_a_description():
    assert set(METADATA) <= {"name", "description", "parameters", "streaming", "supportsAtLeastOnce",
                             "supportsExactlyOnce", "defaultStreamingMode"}
    assert METADATA["name"].strip() and METADATA["description"].strip()


def test_parameter_names_are_unique_and_well_formed():
    names = [parameter["name"] for parameter in METADATA["parameters"]]
    assert len(names) == len(set(names))
    assert [name for name in names if not NAME.match(name)] == []


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_each_parameter_follows_the_rules(name):
    parameter = PARAMETERS[name]
    assert set(parameter) <= PARAMETER_KEYS, set(parameter) - PARAMETER_KEYS
    assert isinstance(parameter["label"], str) and parameter["label"].strip()
    assert isinstance(parameter["helpText"], str) and parameter["helpText"].strip()
    assert isinstance(parameter["isOptional"], bool)
    assert isinstance(parameter["regexes"], list) and parameter["regexes"]
    for pattern in parameter["regexes"]:
        re.compile(pattern)


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_each_regex_accepts_a_real_value_and_refuses_a_wrong_one(name):
    good, bad = EXAMPLES[name]
    patterns = [re.compile(pattern) for pattern in PARAMETERS[name]["regexes"]]
    assert all(pattern.fullmatch(good) for pattern in patterns), good
    assert not all(pattern.fullmatch(bad) for pattern in patterns), bad


def test_every_parameter_is_an_option_tipline_run_parses():
    """The launcher passes `--name=value`; after translation every value lands on its option."""
    argv = launcher_argv([f"--{name}={good}" for name, (good, _) in EXAMPLES.items()])
    options = PipelineOptions(argv)
    tipline = options.view_as(TiplineOptions).get_all_options()
    assert tipline["geoip_city_db"] == "gs://tipline-ref/geoip/GeoIP2-City.mmdb"
    assert tipline["hash_banks"] == ["gs://tipline-ref/banks/known.parquet"]
    assert tipline["negative_hash_banks"] == ["packaged:demo-negative-bank.csv"]
    assert tipline["input_pattern"] == "gs://tipline-prod/replay/*.jsonl"
    assert tipline["route_topic_template"] == "projects/tipline-prod/topics/tips-{jurisdiction}"
    assert tipline["bank_refresh_seconds"] == 60 and tipline["allowed_lateness_hours"] == 1.5
    assert options.view_as(WorkerOptions).sdk_container_image.endswith("/tipline/worker:2026-12-01")
    beam_options = set(options.get_all_options())
    for argument in argv:
        flag = argument.split("=")[0]
        assert flag in _tipline_flags() or flag[2:] in beam_options, flag


def _tipline_flags():
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    TiplineOptions._add_argparse_args(parser)
    return {flag for action in parser._actions for flag in action.option_strings}


def test_the_worker_image_follows_the_pinned_beam_version_and_launches_the_entry_point():
    """The image cannot be built here; what can be checked is that it matches the code it ships."""
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    [pinned] = re.findall(r'"apache-beam\[dask\]==([\d.]+)"', (REPO / "setup.py").read_text())
    assert f"ARG BEAM_VERSION={pinned}\n" in dockerfile
    assert "FROM apache/beam_python3.11_sdk:${BEAM_VERSION}" in dockerfile
    [entry] = re.findall(r"ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/tipline/(\S+)", dockerfile)
    assert (REPO / entry).is_file() and entry == "pipelines/flex_template.py"
    for folder in ("pipelines", "transforms", "schemas"):
        assert f"COPY {folder} ./{folder}" in dockerfile
