"""Reservations in the portal: find a window, see its cost, create, extend with the cost
shown first, end with the refund shown first; every change is a POST with the page's token."""

from __future__ import annotations

import re
from typing import Any

from tests.web.conftest import Browser


def _find(b: Browser, **q: str) -> Any:
    params = {"kind": "host", "count": "1", "duration": "4h", **q}
    return b.get("/t/physics/leases/find", params=params)


def test_the_finder_offers_windows_with_their_cost(alice: Browser) -> None:
    r = _find(alice, where='gpu_model == "A100"', alternatives="2")
    assert r.status_code == 200
    assert r.text.count("Reserve this") == 3, r.text
    assert "gpu-a" in r.text and "host:A100 h" in r.text


def test_the_finder_says_what_is_wrong_with_the_request(alice: Browser) -> None:
    r = _find(alice, duration="4 weeks")
    assert r.status_code == 200
    assert 'class="field-error"' in r.text and "duration" in r.text
    r = _find(alice, where="gpu_model ==")
    assert 'class="form-error"' in r.text
    r = _find(alice, where='gpu_model == "Z9000"', count="1")
    assert "Nothing fits" in r.text or "no host" in r.text.lower(), r.text


def test_create_extend_and_end_a_lease_with_the_cost_shown_first(alice: Browser) -> None:
    q = {
        "name": "run1",
        "kind": "host",
        "count": "1",
        "where": 'gpu_model == "A100"',
        "duration": "4h",
    }
    r = alice.get("/t/physics/leases/new", params=q)
    assert r.status_code == 200 and "Reserve for" in r.text
    assert "128 host:A100 h" in r.text or "host:A100 h" in r.text
    # Nothing is booked by looking.
    assert "run1" not in alice.get("/t/physics/leases").text
    r = alice.post("/t/physics/leases", q)
    assert r.status_code == 303 and r.headers["location"] == "/t/physics/leases/run1?done=created"
    page = alice.get("/t/physics/leases/run1").text
    assert "ACTIVE" in page or "PENDING" in page
    # Extending shows what it costs before anything changes.
    r = alice.get("/t/physics/leases/run1", params={"how": "extend", "amount": "2h"})
    assert "Confirm the change" in r.text and "charged" in r.text
    before = re.search(r"to (\d{4}-\d\d-\d\d \d\d:\d\d UTC)", page)
    assert before is not None
    r = alice.post("/t/physics/leases/run1/change", {"how": "extend", "amount": "2h"})
    assert r.status_code == 303
    after = alice.get("/t/physics/leases/run1").text
    assert before.group(1) not in after.split("Window", 1)[1].split("</dd>", 1)[0]
    # Ending shows the refund first, then ends it.
    r = alice.get("/t/physics/leases/run1", params={"end": "true"})
    assert "End lease run1 now?" in r.text and "Refund" in r.text
    r = alice.post("/t/physics/leases/run1/end", {})
    assert r.status_code == 303
    assert (
        "ENDING" in alice.get("/t/physics/leases/run1").text
        or "ENDED" in alice.get("/t/physics/leases/run1").text
    )


def test_a_change_without_the_pages_token_is_refused(alice: Browser, bob: Browser) -> None:
    q = {"name": "run2", "kind": "flavor", "count": "1", "flavor": "m1.small", "duration": "1h"}
    for kwargs in ({"csrf": ""}, {"csrf": bob.csrf}, {"origin": "http://evil.example"}):
        r = alice.post("/t/physics/leases", q, **kwargs)
        assert r.status_code == 403, (kwargs, r.text)
        assert "run2" not in alice.get("/t/physics/leases").text
    assert alice.post("/t/physics/leases", q).status_code == 303
    assert alice.post("/t/physics/leases/run2/end", {}).status_code == 303


def test_bad_lease_input_is_answered_on_a_page_that_says_what_to_change(alice: Browser) -> None:
    r = alice.get("/t/physics/leases/new", params={"name": "x y", "kind": "host", "duration": "1h"})
    assert r.status_code == 200 and 'class="field-error"' in r.text
    r = alice.post(
        "/t/physics/leases", {"name": "bad", "kind": "host", "count": "0", "duration": "1h"}
    )
    assert r.status_code == 422 and "count" in r.text and "<h1>" in r.text


def test_the_calendar_draws_the_tenancys_leases(alice: Browser) -> None:
    q = {"name": "cal1", "kind": "flavor", "count": "1", "flavor": "m1.small", "duration": "3h"}
    assert alice.post("/t/physics/leases", q).status_code == 303
    r = alice.get("/t/physics/calendar")
    assert r.status_code == 200 and "<svg" in r.text and ">cal1</text>" in r.text
    assert alice.post("/t/physics/leases/cal1/end", {}).status_code == 303


def test_a_request_that_does_not_fit_points_to_the_finder(alice: Browser) -> None:
    q = {"name": "huge", "kind": "host", "count": "50", "duration": "2h"}
    r = alice.get("/t/physics/leases/new", params=q)
    assert "needs 50 host(s)" in r.text and "Find the earliest window for this" in r.text
    assert "Reserve for" not in r.text
    r = alice.get("/t/physics/leases/new", params={**q, "name": "Bad Name", "count": "1"})
    assert "Find the earliest window" not in r.text and "lowercase letters" in r.text
