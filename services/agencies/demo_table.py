"""Builds the demo agencies table `schemas/agencies.csv` from the routing tables, with demo credentials hashed.

    python -m services.agencies.demo_table            # rewrites schemas/agencies.csv

One agency per ICAC task force (its code; in a state with several task forces and no rest-of-state one,
also the state-level `US-XX` queue), one per foreign country, one federal desk for the US territories
and the triage desk for `UNKNOWN`. Only the agencies in DEMO_SECRETS can sign in; their secrets are
demo-only and printed in the README.
"""
import csv
import pathlib

from schemas import reference_table
from services.agencies.directory import COLUMNS
from services.common.credentials import hash_secret

DEMO_SECRETS = {
    "triage": "demo-triage-secret",
    "intl-in": "demo-intl-in-secret",
    "intl-ph": "demo-intl-ph-secret",
    "icac-us-ca-la": "demo-icac-us-ca-la-secret",
}
TABLE = pathlib.Path(__file__).resolve().parents[2] / "schemas" / "agencies.csv"


def task_force_agencies(task_forces):
    """`(agency_id, name, codes)` for each task force with a lead agency, the codes as the routing assigns them."""
    by_state = {}
    for row in task_forces:
        if row["lead_agency"]:
            by_state.setdefault(row["state"], []).append(row)
    for state, rows in sorted(by_state.items()):
        state_code = f"US-{state}"
        shares_state_queue = len(rows) > 1 and state_code not in {row["task_force_id"] for row in rows}
        for row in rows:
            codes = [state_code] if len(rows) == 1 else [row["task_force_id"]]
            if shares_state_queue:
                codes.append(state_code)
            name = f"{row['task_force_name']} ({row['lead_agency']})"
            yield f"icac-{row['task_force_id'].lower()}", name, codes


def country_agencies(countries):
    """One agency per foreign country, and one federal desk for every US territory code."""
    territories = []
    for row in countries:
        code = row["jurisdiction"]
        if code.startswith("US-<"):
            continue
        if code.startswith("US-"):
            territories.append(code)
        else:
            yield f"intl-{code.lower()}", f"{row['country_name']}: {row['agency']}", [code]
    yield "us-federal-territories", "US federal law enforcement (FBI/HSI) for the US territories", sorted(territories)


def demo_rows():
    agencies = [*task_force_agencies(reference_table("icac_task_forces")),
                *country_agencies(reference_table("jurisdictions")),
                ("triage", "Clearinghouse triage desk (federal/INTERPOL) for reports that cannot be located", ["UNKNOWN"])]
    for agency_id, name, codes in agencies:
        secret = DEMO_SECRETS.get(agency_id)
        yield {"agency_id": agency_id, "agency_name": name, "jurisdictions": " ".join(codes),
               "credential_hash": hash_secret(secret) if secret else "", "status": "active", "expires_at": ""}


def write_table(path=TABLE):
    rows = list(demo_rows())
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


if __name__ == "__main__":
    print(f"{write_table()} agencies written to {TABLE}")
