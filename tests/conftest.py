"""Shared fixtures: the contract example and the read-only reference data in ../shared."""
import copy
import json
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MAXMIND = SHARED / "data" / "maxmind"


def example_report():
    """A fresh copy of the contract's example report."""
    return copy.deepcopy(json.loads((SHARED / "contract" / "report-example.json").read_text()))


@pytest.fixture
def report():
    return example_report()


@pytest.fixture(scope="session")
def city_test_db():
    return str(MAXMIND / "GeoIP2-City-Test.mmdb")


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run the long fuzz and soak tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long profile: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
