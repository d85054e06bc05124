"""The pure enrichment chain: report -> hashes -> location -> routing -> routed record.

Each stage of the pipeline runs one step (EnrichHashes `with_hashes` over a batch, EnrichGeo
`with_location`, AssignJurisdiction `with_routing`, BuildRoutedRecords `routed_record`); `tipline explain`, the
batch benchmark's plain-Python loop and the hostile-input tests run the same steps (`enrich_and_route`),
so none of them keeps a copy that could drift from what the pipeline does.
"""
from transforms.reports.routed_record import to_routed_record


def with_hashes(reports, matcher):
    """The reports with `_hashes` (per-file hashes and matches, the match summary), one bank lookup per
    signal type for the whole batch."""
    return [{**report, "_hashes": hashes} for report, hashes in zip(reports, matcher.enrich_reports(reports))]


def with_location(report, locator):
    """The report with `_geo`: the IP that best locates it and where that is."""
    return {**report, "_geo": locator.locate(report)}


def with_routing(report, rules):
    """The report with `_routing`: jurisdiction, agency, priority and referral class."""
    return {**report, "_routing": rules.assign(report)}


def routed_record(report, check=None):
    """The record the report's jurisdiction receives, checked against the routed schema when `check` is given."""
    record = to_routed_record(report)
    if check is not None:
        check(record)
    return record


def enrich_and_route(reports, matcher, locator, rules, check=None):
    """The routed records of a batch of parsed reports, as the pipeline's stages would build them."""
    return [routed_record(with_routing(with_location(report, locator), rules), check)
            for report in with_hashes(reports, matcher)]
