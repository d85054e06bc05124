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
