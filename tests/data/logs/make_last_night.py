"""Write last-night.log.gz: a night of a Sage service, as structlog logs it.

The story, used by tests/test_logs.py and docs/logs.md (times UTC):

* 20:00 the service starts (plain-text uvicorn lines, then JSON).
* 22:00:05 database_connection trips (connection refused), recovers at
  22:00:35 after 30 s open; 14 calls rejected.
* 02:10:00 siliconflow_api trips on 503s, fails two probes, closes at
  02:16:03: three trips within six minutes (flapping), 6 minutes open,
  120 + 95 + 88 = 303 calls rejected. A traceback (plain text) is logged.
* 03:40:00 siliconflow_api trips on a read timeout; 2 minutes open, 40
  rejected; closed at 03:42:01.
* 08:00 the last line.

Run ``python tests/data/logs/make_last_night.py`` to rewrite the file.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import random
from pathlib import Path

START = dt.datetime(2026, 11, 27, 20, 0, tzinfo=dt.UTC)
DB_REFUSED = "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 5432)"
API_503 = (
    "HTTPStatusError: Server error '503 Service Unavailable' for url "
    "'https://api.siliconflow.cn/v1/chat/completions'"
)
API_TIMEOUT = "ReadTimeout: timed out after 30.0s"


def main() -> None:
    rng = random.Random(20261127)
    entries: list[tuple[dt.datetime, str]] = []

    def at(text: str) -> dt.datetime:
        day = START.date() if text >= "12" else START.date() + dt.timedelta(1)
        hour, minute, second = text.split(":")
        seconds = float(second)
        return dt.datetime(
            day.year,
            day.month,
            day.day,
            int(hour),
            int(minute),
            int(seconds),
            round(seconds % 1 * 1e6),
            tzinfo=dt.UTC,
        )

    def log(
        moment: dt.datetime, event: str, level: str = "info", **keys: object
    ) -> None:
        data = dict(keys)
        data.update(
            event=event,
            level=level,
            logger="sage_resilience" if "breaker" in keys else "sage.api",
            timestamp=moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        )
        entries.append((moment, json.dumps(data)))

    def change(
        when: str,
        breaker: str,
        old: str,
        new: str,
        *,
        failure: str | None = None,
        rejected: int | None = None,
        reason: str = "consecutive_failures",
    ) -> None:
        moment = at(when)
        keys: dict[str, object] = {
            "breaker": breaker,
            "old_state": old,
            "new_state": new,
            "reason": reason,
            "failure_count": 3 if new == "open" else 0,
            "failure_threshold": 3,
            "recovery_timeout": 30
            if breaker == "database_connection"
            else 120,
            "recent_failures": [],
            "failure_rate_per_min": 3 if new == "open" else 0,
            "last_failure": failure,
            "last_cause": None,
            "platform": "linux",
        }
        if rejected is not None:
            keys["rejected_while_open"] = rejected
        log(
            moment,
            "circuit_state_changed",
            "warning" if new == "open" else "info",
            **keys,
        )

    def retry(when: str, breaker: str, attempt: int, error: str) -> None:
        log(
            at(when),
            "retry_scheduled",
            "warning",
            breaker=breaker,
            attempt=attempt,
            max_attempts=3,
            wait=round(0.2 * 2**attempt, 3),
            error=error,
        )

    # Requests all night long, one a minute.
    moment = START + dt.timedelta(seconds=1)
    end = START + dt.timedelta(hours=12)
    while moment < end:
        log(
            moment,
            "request_finished",
            method="POST",
            path=rng.choice(["/api/memories", "/api/search", "/api/chat"]),
            status=200,
            duration_ms=round(rng.uniform(5, 900), 1),
        )
        moment += dt.timedelta(seconds=rng.uniform(45, 75))
    log(end, "service_heartbeat")

    # 22:00 a database blip.
    retry("22:00:03", "database_connection", 1, DB_REFUSED)
    retry("22:00:04", "database_connection", 2, DB_REFUSED)
    log(
        at("22:00:05"),
        "retry_exhausted",
        "error",
        breaker="database_connection",
        attempts=3,
        error=DB_REFUSED,
    )
    change(
        "22:00:05", "database_connection", "closed", "open", failure=DB_REFUSED
    )
    log(
        at("22:00:06"),
        "call_rejected",
        breaker="database_connection",
        retry_after=29.0,
    )
    change("22:00:35", "database_connection", "open", "half-open", rejected=14)
    change(
        "22:00:35.2",
        "database_connection",
        "half-open",
        "closed",
        reason="probe_succeeded",
    )

    # 02:10 the chat API answers 503 and flaps.
    for second, attempt in (("02:09:50", 1), ("02:09:55", 2)):
        retry(second, "siliconflow_api", attempt, API_503)
    log(
        at("02:10:00"),
        "retry_exhausted",
        "error",
        breaker="siliconflow_api",
        attempts=3,
        error=API_503,
    )
    change("02:10:00", "siliconflow_api", "closed", "open", failure=API_503)
    log(
        at("02:10:01"),
        "call_rejected",
        breaker="siliconflow_api",
        retry_after=119.0,
    )
    change(
        "02:12:00",
        "siliconflow_api",
        "open",
        "half-open",
        rejected=120,
        reason="recovery_timeout_elapsed",
    )
    change(
        "02:12:01",
        "siliconflow_api",
        "half-open",
        "open",
        failure=API_503,
        reason="probe_failed",
    )
    change(
        "02:14:01",
        "siliconflow_api",
        "open",
        "half-open",
        rejected=95,
        reason="recovery_timeout_elapsed",
    )
    change(
        "02:14:02",
        "siliconflow_api",
        "half-open",
        "open",
        failure=API_503,
        reason="probe_failed",
    )
    change(
        "02:16:02",
        "siliconflow_api",
        "open",
        "half-open",
        rejected=88,
        reason="recovery_timeout_elapsed",
    )
    change(
        "02:16:03",
        "siliconflow_api",
        "half-open",
        "closed",
        reason="probe_succeeded",
    )
    traceback = [
        "Traceback (most recent call last):",
        '  File "/app/sage/chat.py", line 88, in complete',
        "    response.raise_for_status()",
        API_503,
    ]
    entries.extend((at("02:10:00.5"), text) for text in traceback)

    # 03:40 a read timeout.
    retry("03:39:00", "siliconflow_api", 1, API_TIMEOUT)
    retry("03:39:30", "siliconflow_api", 2, API_TIMEOUT)
    change(
        "03:40:00", "siliconflow_api", "closed", "open", failure=API_TIMEOUT
    )
    change(
        "03:42:00",
        "siliconflow_api",
        "open",
        "half-open",
        rejected=40,
        reason="recovery_timeout_elapsed",
    )
    change(
        "03:42:01",
        "siliconflow_api",
        "half-open",
        "closed",
        reason="probe_succeeded",
    )

    entries.sort(key=lambda entry: entry[0])
    lines = [
        "INFO:     Started server process [4242]",
        "INFO:     Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C to quit)",
    ]
    lines += [text for _, text in entries]
    data = ("\n".join(lines) + "\n").encode()
    target = Path(__file__).with_name("last-night.log.gz")
    target.write_bytes(gzip.compress(data, mtime=0))


if __name__ == "__main__":
    main()
