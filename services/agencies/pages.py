"""The read-only pages an agency user sees: its report list and one report's detail. Every value is escaped."""
from html import escape
from urllib.parse import quote

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1b1f24;background:#f6f7f9}
h1{font-size:1.3rem;margin:0 0 .2rem} .who{color:#555;margin-bottom:1rem}
table{border-collapse:collapse;background:#fff;width:100%;font-size:.9rem}
th,td{border:1px solid #d5d9de;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#e9edf1} .P1{background:#c62828;color:#fff} .P2{background:#ef6c00;color:#fff} .P3{background:#607d8b;color:#fff}
.prio{font-weight:bold;padding:.1rem .4rem;border-radius:3px} .no{color:#c62828;font-weight:bold} .yes{color:#2e7d32}
nav a{margin-right:.8rem} dl{display:grid;grid-template-columns:12rem 1fr;gap:.2rem .8rem;background:#fff;padding:.8rem}
dt{font-weight:bold} code{font-size:.85rem} .nowrap{white-space:nowrap}
"""


def _page(title, agency, body):
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>"
            f"<div class='who'>Signed in as <b>{escape(agency.name)}</b> ({escape(agency.agency_id)}) — "
            f"jurisdictions: {escape(', '.join(agency.jurisdictions))}</div>{body}</body></html>")


def _priority(value):
    return f"<span class='prio {escape(value)}'>{escape(value)}</span>"


def _acknowledged(value):
    return "<span class='yes'>yes</span>" if value else "<span class='no'>not yet</span>"


def _text(value):
    return escape("—" if value is None or value == "" else str(value))


def report_list(agency, items, priority, total):
    filters = " ".join(f"<a href='/ui?priority={p}'>{p}</a>" for p in ("P1", "P2", "P3"))
    rows = "".join(
        f"<tr><td>{_priority(item['priority'])}</td><td class='nowrap'>{_text(item['submittedAt'])}</td>"
        f"<td>{_text(item['incidentType'])}</td><td>{_text(item['matchSummary'])}</td>"
        f"<td><code>{_text(item['bundleId'])}</code></td><td>{_acknowledged(item['acknowledged'])}</td>"
        f"<td>{_text(item['jurisdiction'])}</td>"
        f"<td class='nowrap'><a href='/ui/reports/{quote(item['reportId'], safe='')}'>{_text(item['reportId'])}</a></td></tr>"
        for item in items)
    more = (f"<p><a href='/ui?before={items[-1]['cursor']}{'&priority=' + priority if priority else ''}'>older reports</a></p>"
            if len(items) == 100 else "")
    shown = f"{len(items)} of {total} report{'s' if total != 1 else ''}" + (f", priority {escape(priority)}" if priority else "")
    body = (f"<nav><a href='/ui'>all</a>{filters}</nav><p>{shown}, newest first</p>"
            "<table><thead><tr><th>Priority</th><th>Received</th><th>Incident type</th><th>Match</th><th>Bundle</th>"
            f"<th>Acknowledged</th><th>Jurisdiction</th><th>Report</th></tr></thead><tbody>{rows}</tbody></table>{more}")
    return _page("Reports", agency, body)


def _hashes_cell(file):
    return "<br>".join(f"{_text(h['signalType'])} <code>{_text(h['value'])}</code>" for h in file.get("hashes") or [])


def _matches_cell(file):
    return "<br>".join(f"{_text(m['bank'])}: {_text(m.get('label'))} ({_text(m['signalType'])}, distance {_text(m['distance'])})"
                       for m in file.get("matches") or []) or "—"


def _files_table(files):
    rows = "".join(
        f"<tr><td>{_text(file.get('fileName'))}</td><td>{_text(file.get('mediaStatus'))}</td>"
        f"<td>{_hashes_cell(file)}</td><td>{_matches_cell(file)}</td>"
        f"<td>{'yes' if file.get('legalProcessRequired') else 'no'}</td></tr>"
        for file in files)
    return ("<h2>Files</h2><table><thead><tr><th>File name</th><th>Media</th><th>Hashes</th><th>Matches</th>"
            f"<th>Legal process required</th></tr></thead><tbody>{rows}</tbody></table>")


def _facts(facts):
    return "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts)


def report_detail(agency, found, acknowledged):
    record = found["record"]
    location = record.get("location") or {}
    user = record.get("reportedUser") or {}
    facts = [("Priority", _priority(record["priority"])), ("Received", _text(record["submittedAt"])),
             ("Incident type", _text(record["incidentType"])), ("Incident time", _text(record.get("incidentDateTime"))),
             ("ESP", _text(record.get("espName") or record["espId"])), ("Match summary", _text(record["matchSummary"])),
             ("Bundle", f"<code>{_text(record.get('bundleId'))}</code>"), ("Acknowledged", _acknowledged(acknowledged)),
             ("Jurisdiction", _text(found["jurisdiction"])), ("Routed to", _text(record["jurisdiction"])),
             ("Routing reason", _text(record["jurisdictionReason"])), ("Referral class", _text(record["referralClass"])),
             ("Reported user", f"{_text(user.get('espIdentifier'))} / {_text(user.get('screenName'))}"),
             ("Location", _text(", ".join(str(part) for part in (location.get("city"), location.get("subdivisionCode"),
                                                                  location.get("countryCode")) if part) or None)),
             ("IP", f"{_text(location.get('ip'))} ({_text(location.get('ipSource'))})"),
             ("Escalation", _text(record.get("escalateToHighPriority")))]
    referrals = "".join(f"<li>{_text(r['at'])}: {_text(r['from'])} → {_text(r['to'])}: {_text(r['reason'])}</li>"
                        for r in found["referrals"])
    body = ("<nav><a href='/ui'>← all reports</a></nav>"
            f"<dl>{_facts(facts)}</dl>"
            f"{_files_table(record.get('files') or [])}"
            + (f"<h2>Referrals</h2><ul>{referrals}</ul>" if referrals else ""))
    return _page(f"Report {record['reportId']}", agency, body)


NOT_FOUND_PAGE = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>No such report</title>"
                  f"<style>{STYLE}</style></head><body><h1>No such report</h1>"
                  "<nav><a href='/ui'>← all reports</a></nav></body></html>")
