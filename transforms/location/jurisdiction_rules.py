"""Jurisdiction, agency, priority and referral class of a located report: the pure core of `AssignJurisdiction`.

The routing facts live in tables under schemas/, not here:
- `jurisdictions.csv`: country (ISO 3166 alpha-2) -> jurisdiction code and receiving agency channel;
  `agency_basis` says whether the channel is specific or the generic "national police via INTERPOL liaison".
  US territories without an ICAC task force route to `US-<territory>` (US federal law enforcement).
- `icac_task_forces.csv`: US state -> ICAC task force(s) (a verbatim copy of the reference, with sources).
- `us_city_counties.csv`: for the states with several task forces (CA, TX, FL, IL, NY, VA), the main cities'
  county and task force. GeoIP gives a city, not a county. When the city is missing or not in the table the
  report goes to the state-level default `US-<state>`: for IL and NY that is the rest-of-state task force
  (US-IL, US-NY); for CA, FL, TX and VA it is a state-level triage queue shared by the state's task forces.

Anything that hides the user or that the tables cannot place routes to `UNKNOWN` (federal/INTERPOL triage),
never to a state task force: a possible proxy or anonymizer, a pseudo-country, no usable location, a
country code outside the table, a subdivision without a country, a US location without a known state.
"""
import functools

from schemas import reference_table
from transforms.location.geoip import PSEUDO_COUNTRY_CODES, ascii_upper

UNKNOWN = "UNKNOWN"
TRIAGE_AGENCY = "US federal law enforcement / INTERPOL triage via the clearinghouse"
US_STATE_ROUTE = "US-<state>"


def ascii_casefold(text):
    """Lower case for ASCII text only ("" otherwise): Unicode folding would let "Loſ Angeles" pass as "los angeles"."""
    return text.lower() if isinstance(text, str) and text.isascii() else ""


def legal_process_required(file):
    """True unless the provider viewed the file: an unviewed file needs legal process before anyone opens it."""
    return file.get("fileViewedByEsp") is not True


def hash_verdict(report):
    """The hash stage's match summary, "known" | "known_benign" | "new" | "no_media"; a report it never saw
    counts as "no_media"."""
    return (report.get("_hashes") or {}).get("matchSummary") or "no_media"


def priority_of(report):
    """`(priority, reason)`: P1 escalated by the provider; P2 new (unmatched) apparent abuse media; else P3."""
    escalation = (report.get("incidentSummary") or {}).get("escalateToHighPriority")
    if isinstance(escalation, str) and escalation.strip():
        return "P1", "escalated by the provider: escalateToHighPriority is set"
    summary = hash_verdict(report)
    if summary == "new":
        return "P2", "new media matching no known hash: a possibly unidentified victim"
    if summary == "known":
        return "P3", "media matches known hashes only"
    if summary == "known_benign":
        return "P3", "media matches known benign content (a negative-bank entry) only"
    return "P3", "no media to assess"


def referral_class_of(report):
    """`(class, reason)`: "referral" when there is enough to act on, else "informational".

    Rule, in order: escalated -> referral; batched (viral/meme) -> informational; a located user (by IP or
    estimatedLocation, not hidden by a proxy) -> referral; a usable identifier (public IP or user account)
    plus media or hashes -> referral; otherwise informational.
    """
    if priority_of(report)[0] == "P1":
        return "referral", "escalated by the provider"
    if report.get("batchedReport"):
        return "informational", "batched report (viral or meme content)"
    geo = report["_geo"]
    if geo["locationSource"] != "none" and not geo.get("anonymous"):
        return "referral", f"user located ({geo['locationSource']})"
    user = report.get("personOrUserReported") or {}
    identifiers = [name for name, value in (("public IP", geo.get("ip")), ("account", user.get("espIdentifier")),
                                            ("screen name", user.get("screenName"))) if value]
    evidence = hash_verdict(report) != "no_media" or any(
        file.get("originalFileHashes") for file in report.get("files") or [])
    if identifiers and evidence:
        return "referral", f"usable identifier ({', '.join(identifiers)}) plus media or hashes"
    return "informational", "no located user, and no usable identifier with media or hashes"


def _task_force_agency(task_force):
    return f"{task_force['task_force_name']} ({task_force['lead_agency'] or 'no lead agency'}) [{task_force['task_force_id']}]"


class JurisdictionRules:
    """Country, state and city tables turned into a routing decision for each report's `_geo`."""

    def __init__(self, countries, task_forces, city_task_forces):
        self.countries = {row["country_code"]: row for row in countries}
        self.task_forces = {row["task_force_id"]: row for row in task_forces}
        self.state_task_forces = {}
        for row in task_forces:
            self.state_task_forces.setdefault(row["state"], []).append(row)
        self.city_task_forces = {(row["state"], ascii_casefold(row["city"])): row for row in city_task_forces}

    @classmethod
    @functools.cache
    def load(cls):
        """The rules from the tables shipped in schemas/ (read once per process)."""
        return cls(reference_table("jurisdictions"), reference_table("icac_task_forces"),
                   reference_table("us_city_counties"))

    def jurisdiction_of(self, geo):
        """`(jurisdiction, reason, agency)` for a `_geo` location."""
        if geo["locationSource"] == "none":
            return UNKNOWN, f"no usable location: {geo.get('unlocatedReason')}", TRIAGE_AGENCY
        if geo.get("anonymous"):
            return UNKNOWN, (f"possible proxy or anonymizer hides the user ({geo.get('ip')}): "
                             f"{geo.get('ipChoiceReason')}"), TRIAGE_AGENCY
        country, subdivision = geo.get("countryCode"), geo.get("subdivisionCode")
        if not country:
            detail = f"subdivision {subdivision!r} without a country" if subdivision else "no country"
            return UNKNOWN, f"inconsistent location ({geo['locationSource']}): {detail}", TRIAGE_AGENCY
        if country in PSEUDO_COUNTRY_CODES:
            return UNKNOWN, f"pseudo-country {country!r} names no country", TRIAGE_AGENCY
        row = self.countries.get(country)
        if row is None:
            return UNKNOWN, (f"inconsistent location ({geo['locationSource']}): country code {country!r} is not "
                             "an ISO 3166 alpha-2 code in schemas/jurisdictions.csv"), TRIAGE_AGENCY
        if row["jurisdiction"] == US_STATE_ROUTE:
            return self._us_jurisdiction(subdivision, geo.get("city"), geo["locationSource"])
        return row["jurisdiction"], f"{row['country_name']} ({country}) by {geo['locationSource']}", row["agency"]

    def _us_jurisdiction(self, subdivision, city, source):
        state = (ascii_upper(subdivision) or "").removeprefix("US-")
        task_forces = self.state_task_forces.get(state)
        if not task_forces or not any(row["lead_agency"] for row in task_forces):
            detail = f"subdivision {subdivision!r} is not a state with an ICAC task force" if subdivision else "no state"
            return UNKNOWN, f"US location ({source}) with {detail}", TRIAGE_AGENCY
        if len(task_forces) == 1:
            return f"US-{state}", f"US state {state} by {source}: one ICAC task force", _task_force_agency(task_forces[0])
        refined = self.city_task_forces.get((state, ascii_casefold(city)))
        if refined is not None:
            task_force = self.task_forces[refined["task_force_id"]]
            return task_force["task_force_id"], (
                f"US state {state} by {source}, city {city} in {refined['county']} county "
                f"({refined['basis']})"), _task_force_agency(task_force)
        return self._state_default(state, city, source, task_forces)

    def _state_default(self, state, city, source, task_forces):
        code = f"US-{state}"
        why = f"city {city!r} not in schemas/us_city_counties.csv" if city else "no city"
        reason = f"US state {state} by {source} has several ICAC task forces and {why}: state-level default"
        if code in self.task_forces:
            return code, f"{reason} (the rest-of-state task force)", _task_force_agency(self.task_forces[code])
        ids = ", ".join(row["task_force_id"] for row in task_forces)
        return code, f"{reason} (triage queue)", f"state-level triage for the {state} ICAC task forces ({ids})"

    def explain(self, report):
        """The routing with the reason for each decision (what `assign` keeps, plus priority and referral reasons)."""
        jurisdiction, reason, agency = self.jurisdiction_of(report["_geo"])
        priority, priority_reason = priority_of(report)
        referral, referral_reason = referral_class_of(report)
        return {"jurisdiction": jurisdiction, "jurisdictionReason": reason, "agency": agency,
                "priority": priority, "priorityReason": priority_reason,
                "referralClass": referral, "referralReason": referral_reason}

    def assign(self, report):
        """The report's `_routing`: jurisdiction, jurisdictionReason, agency, priority, referralClass."""
        routing = self.explain(report)
        del routing["priorityReason"], routing["referralReason"]
        return routing
