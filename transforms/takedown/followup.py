"""Where each takedown notice stands, from the notice and the checks recorded so far (pure; no I/O).

    sent ──check──► removed                     (404/410, or the content changed: another type or length)
      │    └──────► still available ─► re_notified ─► … ─► escalated    (still there after the last attempt)
      │    └──────► unreachable (retried) ─► … ─► unreachable (final)   (a timeout is not a takedown)
      └── a URL no machine may check ─► not_checkable (at once, or when a redirect leads somewhere forbidden)

A notice is sent with its day's batch, at the end of its UTC day. A check is due `after_hours` after the
notice was sent or last checked, for up to `max_attempts` checks; each check is recorded under its
(notice id, attempt), so a re-run never repeats a recorded check.
"""
import datetime

FINAL = frozenset({"removed", "escalated", "not_checkable", "unreachable_final"})


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(moment):
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sent_at(notice):
    """The end of the notice's UTC day: when its daily batch goes out."""
    day = datetime.datetime.strptime(notice["day"], "%Y-%m-%d").replace(tzinfo=datetime.timezone.utc)
    return day + datetime.timedelta(days=1)


def notice_state(notice, checks, max_attempts):
    """{status, attempts, sentAt, lastCheckedAt, removedAt, reason} after the notice's checks (any order)."""
    state = {"status": "sent", "attempts": 0, "sentAt": iso(sent_at(notice)), "lastCheckedAt": None,
             "removedAt": None, "reason": None}
    if not notice.get("checkable", True):
        return {**state, "status": "not_checkable", "reason": notice.get("notCheckableReason")}
    first_seen = None  # (content type, length) of the first check that found the content
    for check in sorted(checks, key=lambda c: c["attempt"]):
        state.update(attempts=check["attempt"], lastCheckedAt=check["checkedAt"], reason=check["reason"])
        status = check["status"]
        if status == "available":
            seen = (check.get("contentType"), check.get("contentLength"))
            if first_seen is not None and seen != first_seen:
                status, state["reason"] = "removed", f"content changed ({check['reason']})"
            first_seen = first_seen or seen
        if status == "removed":
            return {**state, "status": "removed", "removedAt": check["checkedAt"]}
        if status == "not_checkable":
            return {**state, "status": "not_checkable"}
        last = check["attempt"] >= max_attempts
        if status == "available":
            state["status"] = "escalated" if last else "re_notified"
        else:
            state["status"] = "unreachable_final" if last else "unreachable"
    return state


def is_due(state, as_of, after_hours):
    """A check is due once `after_hours` have passed since the notice went out or was last checked."""
    if state["status"] in FINAL:
        return False
    since = parse_time(state["lastCheckedAt"] or state["sentAt"])
    return as_of >= since + datetime.timedelta(hours=after_hours)


def hours_to_removal(state):
    if state["removedAt"] is None:
        return None
    return round((parse_time(state["removedAt"]) - parse_time(state["sentAt"])).total_seconds() / 3600, 2)


def outcome_row(notice, state):
    """The analysts' row (notice_outcomes/): no URL, no report ids."""
    return {
        "notice_id": notice["noticeId"],
        "provider": notice["provider"],
        "hosting_country": notice.get("hostingCountry"),
        "day": notice["day"],
        "reports": notice.get("reportCount"),
        "sent": parse_time(state["sentAt"]),
        "checked": parse_time(state["lastCheckedAt"]) if state["lastCheckedAt"] else None,
        "attempts": state["attempts"],
        "status": "unreachable" if state["status"] == "unreachable_final" else state["status"],
        "final": state["status"] in FINAL,
        "hours_to_removal": hours_to_removal(state),
    }


def check_record(notice_id, attempt, as_of, result):
    """What a check leaves in notice_checks/: its outcome and the host's answer, never the URL."""
    return {"noticeId": notice_id, "attempt": attempt, "checkedAt": iso(as_of), "status": result.status,
            "reason": result.reason, "httpStatus": result.http_status, "contentType": result.content_type,
            "contentLength": result.content_length}
