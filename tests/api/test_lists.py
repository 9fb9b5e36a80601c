"""Every list answers one envelope, ``{items, next}``, pages with ``limit`` and ``marker``,
and filters by name; the client follows the pages."""

from __future__ import annotations

from tests.api.conftest import Api


def test_every_collection_answers_the_same_envelope(admin: Api) -> None:
    """No GET of the API answers a bare array (as its OpenAPI document says)."""
    doc = admin.client.get("/openapi.json").json()
    gets = {p: ops["get"] for p, ops in doc["paths"].items() if "get" in ops}
    assert len(gets) > 20
    files = {
        p for p, op in gets.items() if "application/json" not in op["responses"]["200"]["content"]
    }
    # A benchmark's raw output and its plots are files (text, SVG or PNG), not JSON.
    assert files == {
        "/api/v1/benchmarks/{ref}/output",
        "/api/v1/benchmarks/{ref}/plots/{file}",
        "/api/v1/benchmark-sets/{ref}/plots/{file}",
    }, files
    bare = [
        path
        for path, op in gets.items()
        if path not in files
        and op["responses"]["200"]["content"]["application/json"]["schema"].get("type") == "array"
    ]
    # The calendar is a time series over buckets, not a collection of objects.
    assert bare == ["/api/v1/availability/calendar"], bare


def test_pages_follow_each_other_and_a_stale_marker_is_refused(admin: Api) -> None:
    first = admin.get("/flavors", params={"limit": 3}).json()
    assert len(first["items"]) == 3 and first["next"] == first["items"][-1]["name"]
    seen = [f["name"] for f in first["items"]]
    marker = first["next"]
    while marker is not None:
        page = admin.get("/flavors", params={"limit": 3, "marker": marker}).json()
        seen += [f["name"] for f in page["items"]]
        marker = page["next"]
    whole = admin.get("/flavors").json()
    assert whole["next"] is None and seen == [f["name"] for f in whole["items"]]
    assert len(seen) == len(set(seen)) > 3
    r = admin.get("/flavors", params={"marker": "no-such-flavor"})
    assert r.status_code == 422
    assert "marker 'no-such-flavor' is not in this list" in r.json()["detail"]
    assert admin.get("/flavors", params={"limit": 0}).status_code == 422


def test_lists_filter_by_name(admin: Api) -> None:
    names = [f["name"] for f in admin.get("/flavors", params={"name": "XLARGE"}).json()["items"]]
    assert names == ["m1.xlarge"]
    for path in ("/networks", "/tenancies", "/users", "/leases", "/services", "/hosts"):
        r = admin.get(path, params={"name": "surely-no-such-thing"})
        assert r.status_code == 200 and r.json() == {"items": [], "next": None}, (path, r.text)
    r = admin.get("/users", params={"name": "admin"})
    assert [u["name"] for u in r.json()["items"]] == ["admin"]
