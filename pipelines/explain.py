"""`tipline explain REPORT.json`: why one report would be located, routed and prioritised as it is.

Runs the same pure cores as the pipeline (GeoLocator, JurisdictionRules, the takedown sightings, and the hash
matcher when banks are given) on one report and prints every decision with its reason as JSON.
"""
import copy
import json

from pipelines.errors import UsageError
from pipelines.options import hash_bank_paths, naming_the_flag
from transforms.demo.packaged import packaged
from transforms.location.geoip import GeoIPDatabaseError, GeoLocator
from transforms.location.jurisdiction_rules import JurisdictionRules, hash_verdict
from transforms.reports.enrichment import with_hashes, with_location
from transforms.takedown.notices import sightings


def explain_report(report, locator, rules, hash_matcher=None):
    """A JSON-able account of the report's geo enrichment, IP choice, jurisdiction, priority and notices."""
    report = copy.deepcopy(report)
    if hash_matcher is not None:
        report = with_hashes([report], hash_matcher)[0]
    report = with_location(report, locator)
    routing = rules.explain(report)
    report["_routing"] = {key: routing[key] for key in ("jurisdiction", "jurisdictionReason", "agency",
                                                         "priority", "referralClass")}
    return {
        "reportId": report.get("reportId"),
        **routing,
        "matchSummary": hash_verdict(report),
        "geo": report["_geo"],
        "ipCandidates": [_public_candidate(entry) for entry in locator.consider(report)],
        "notices": [_public_notice(sighting) for _, sighting in sightings(
            report, locator.network_of, lambda ip: (locator.city_of(ip) or [{}])[0].get("countryCode"))],
    }


def _public_notice(sighting):
    """Who a notice would go to and whether its URL can be checked; the URL itself stays in the report."""
    return {"fileId": sighting.file_id, **{key: sighting.facts[key] for key in (
        "provider", "host", "hostIsIp", "hostAsn", "hostAsOrganization", "hostingCountry", "checkable",
        "notCheckableReason")}}


def _public_candidate(entry):
    return {key: entry.get(key) for key in ("source", "ipAddress", "ip", "possibleProxy", "decision", "reason")}


def load_hash_matcher(bank_paths, negative_bank_paths, media_roots=()):
    """The hash stage's matcher over the same banks and media roots `tipline run` would use."""
    from transforms.matching.matcher import HashMatcher
    from transforms.matching.media import check_media_roots

    try:
        check_media_roots(media_roots)
    except ValueError as error:
        raise UsageError(f"--media-root {error}") from None
    return HashMatcher.from_banks(*hash_bank_paths(bank_paths, negative_bank_paths), media_roots=media_roots)


def run_explain(args):
    """Prints the explanation of args.report as JSON; an unreadable report or database is a UsageError."""
    try:
        with open(args.report, encoding="utf-8") as handle:
            report = json.load(handle)
        locator = GeoLocator(args.geoip_city_db or packaged("demo-city.mmdb"), args.geoip_asn_db,
                             args.geoip_anonymous_db, args.geoip_isp_db)
        hash_matcher = load_hash_matcher(args.hash_banks, args.negative_hash_banks, args.media_roots)
    except GeoIPDatabaseError as error:
        raise naming_the_flag(error) from error
    except (OSError, ValueError) as error:
        named = f"{args.report}: not JSON ({error})" if isinstance(error, json.JSONDecodeError) else str(error)
        raise UsageError(named) from error
    explanation = explain_report(report, locator, JurisdictionRules.load(), hash_matcher)
    print(json.dumps(explanation, indent=2, ensure_ascii=False))
    return 0


def register(subparsers):
    """Adds `tipline explain` to the `tipline` command's subparsers."""
    parser = subparsers.add_parser("explain", help="explain how one report would be located, routed and prioritised",
                                   description=__doc__)
    parser.add_argument("report", help="a report as JSON (the contract's wire format)")
    parser.add_argument("--geoip-city-db", default=None, help="GeoIP2/GeoLite2 City .mmdb (default: the demo database)")
    parser.add_argument("--geoip-asn-db", default=None, help="GeoLite2 ASN .mmdb")
    parser.add_argument("--geoip-anonymous-db", default=None, help="GeoIP2 Anonymous-IP .mmdb")
    parser.add_argument("--geoip-isp-db", default=None, help="GeoIP2 ISP .mmdb (ISP of IP-address hosts in notices)")
    parser.add_argument("--hash-bank", dest="hash_banks", action="append", default=None,
                        help="hash bank, CSV or Parquet (repeatable; default: the demo bank)")
    parser.add_argument("--negative-hash-bank", dest="negative_hash_banks", action="append", default=None,
                        help="bank of known benign content never reported as a match (repeatable)")
    parser.add_argument("--media-root", dest="media_roots", action="append", default=None,
                        help="where contentUri may point, as in `tipline run` (repeatable)")
    parser.set_defaults(func=run_explain)
    return parser
