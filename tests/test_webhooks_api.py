"""The public webhooks API through Envoy: endpoints made, shown, changed and deleted; the secret shown
once; bad input, another merchant's ids and the wrong scope answered with a JSON 4xx that changes nothing."""

from __future__ import annotations

import base64
import uuid

import pytest

from tests.harness import _with_store, provision, run
from tests.webhook_receiver import (
    INVALID_ARGUMENT,
    NOT_FOUND,
    PERMISSION_DENIED,
    SUBSCRIBABLE_TYPES,
    UNAUTHENTICATED,
    WebhooksApi,
)


@pytest.fixture(scope="module")
def shop(webhook_mesh):
    return provision(webhook_mesh, outlets=2, terminals=1)


@pytest.fixture(scope="module")
def other_shop(webhook_mesh):
    return provision(webhook_mesh, outlets=1, terminals=1)


@pytest.fixture(scope="module")
def admin(webhook_mesh, shop):
    api = WebhooksApi(webhook_mesh.gateway_url, shop["admin_key"])
    yield api
    api.close()


@pytest.fixture(scope="module")
def reader(webhook_mesh, shop):
    api = WebhooksApi(webhook_mesh.gateway_url, shop["read_key"])
    yield api
    api.close()


@pytest.fixture(scope="module")
def till(webhook_mesh, shop):
    api = WebhooksApi(webhook_mesh.gateway_url, shop["pos_keys"][shop["outlets"][0]["id"]])
    yield api
    api.close()


@pytest.fixture(scope="module")
def other_admin(webhook_mesh, other_shop):
    api = WebhooksApi(webhook_mesh.gateway_url, other_shop["admin_key"])
    yield api
    api.close()


def _endpoint_rows(mesh, merchant: dict) -> int:
    """Every endpoint row of a merchant, deleted ones too: the "nothing written" check."""
    import sqlalchemy as sa

    async def count(_, engine):
        async with engine.connect() as conn:
            return (await conn.execute(sa.text("SELECT count(*) FROM webhooks.endpoints WHERE merchant_id = :m"),
                                       {"m": merchant["merchant"]["id"]})).scalar()
    return run(_with_store(mesh.database_url, count))


def _url(webhook_receiver) -> str:
    return webhook_receiver.url(webhook_receiver.path())


def _error(answer, status: int, code: int, *words: str) -> dict:
    assert answer.status_code == status, (answer.status_code, answer.text)
    error = answer.json()
    assert error["code"] == code, error
    for word in words:
        assert word in error["message"], (word, error)
    return error


def _secret_free(answer) -> None:
    assert "whsec_" not in answer.text, answer.text


def test_event_types_are_listed_and_the_test_event_is_not_subscribable(reader):
    answer = reader.call("GET", "/v1/webhook-event-types")
    assert answer.status_code == 200, answer.text
    listed = {t["type"]: t["description"] for t in answer.json()["event_types"]}
    assert set(listed) == SUBSCRIBABLE_TYPES
    assert all(description.strip() for description in listed.values())


def test_create_shows_the_secret_once_and_list_and_get_never(admin, reader, webhook_receiver, shop):
    url = _url(webhook_receiver)
    outlet_id = shop["outlets"][0]["id"]
    created = admin.create(url, ["invoice.sealed", "report.generated"], description="ERP", outlet_ids=[outlet_id])
    assert created["secret"].startswith("whsec_")
    assert len(base64.b64decode(created["secret"].removeprefix("whsec_"))) == 32
    assert uuid.UUID(created["id"])
    assert (created["url"], created["description"], created["disabled"]) == (url, "ERP", False)
    assert sorted(created["event_types"]) == ["invoice.sealed", "report.generated"]
    assert created["outlet_ids"] == [outlet_id]
    assert created["created_at"]

    for api in (admin, reader):  # merchant:read looks too
        got = api.call("GET", f"/v1/webhook-endpoints/{created['id']}")
        assert got.status_code == 200, got.text
        _secret_free(got)
        assert created["secret"] not in got.text
        assert {k: got.json()[k] for k in ("id", "url", "description", "outlet_ids")} == {
            k: created[k] for k in ("id", "url", "description", "outlet_ids")}
        listed = api.call("GET", "/v1/webhook-endpoints")
        assert listed.status_code == 200, listed.text
        _secret_free(listed)
        assert created["id"] in [e["id"] for e in listed.json()["endpoints"]]

    # Two endpoints never share a secret.
    second = admin.create(_url(webhook_receiver))
    assert second["secret"].startswith("whsec_") and second["secret"] != created["secret"]


def test_list_pages_through_every_endpoint(admin, webhook_receiver):
    made = {admin.create(_url(webhook_receiver))["id"] for _ in range(3)}
    first = admin.call("GET", "/v1/webhook-endpoints", params={"page_size": 1})
    assert first.status_code == 200, first.text
    assert len(first.json()["endpoints"]) == 1 and first.json()["next_page_token"]
    assert made <= {e["id"] for e in admin.endpoints()}
    _error(admin.call("GET", "/v1/webhook-endpoints", params={"page_size": 1000}), 400, INVALID_ARGUMENT)


def test_patch_changes_what_is_given_and_leaves_the_rest(admin, webhook_receiver, shop):
    created = admin.create(_url(webhook_receiver), ["invoice.sealed"], description="before")
    path = f"/v1/webhook-endpoints/{created['id']}"

    answer = admin.call("PATCH", path, {"description": "after"})
    assert answer.status_code == 200, answer.text
    _secret_free(answer)
    patched = answer.json()
    assert (patched["description"], patched["url"], patched["event_types"]) == (
        "after", created["url"], ["invoice.sealed"])

    new_url = _url(webhook_receiver)
    outlet_id = shop["outlets"][1]["id"]
    patched = admin.call("PATCH", path, {"url": new_url, "event_types": ["invoice.sync.failed", "payment.failed"],
                                         "outlet_ids": [outlet_id]}).json()
    assert (patched["url"], sorted(patched["event_types"]), patched["outlet_ids"], patched["description"]) == (
        new_url, ["invoice.sync.failed", "payment.failed"], [outlet_id], "after")
    # [] = every outlet again.
    assert admin.call("PATCH", path, {"outlet_ids": []}).json()["outlet_ids"] == []

    disabled = admin.call("PATCH", path, {"disabled": True}).json()
    assert disabled["disabled"] is True and disabled["disabled_reason"]
    enabled = admin.call("PATCH", path, {"disabled": False}).json()
    assert enabled["disabled"] is False and enabled["disabled_reason"] == ""
    assert admin.get(created["id"])["url"] == new_url


def test_delete_hides_the_endpoint(admin, webhook_receiver):
    created = admin.create(_url(webhook_receiver))
    path = f"/v1/webhook-endpoints/{created['id']}"
    assert admin.call("DELETE", path).status_code == 200
    _error(admin.call("GET", path), 404, NOT_FOUND)
    assert created["id"] not in {e["id"] for e in admin.endpoints()}
    _error(admin.call("DELETE", path), 404, NOT_FOUND)
    _error(admin.call("PATCH", path, {"description": "x"}), 404, NOT_FOUND)


BAD_CREATES: dict[str, tuple[dict, tuple[str, ...]]] = {
    # name: (body changes, words the message must contain)
    "not a url": ({"url": "not a url"}, ()),
    "ftp scheme": ({"url": "ftp://127.0.0.1/hook"}, ()),
    "userinfo": ({"url": "https://user:pw@127.0.0.1:8443/hook"}, ()),
    "fragment": ({"url": "https://127.0.0.1:8443/hook#part"}, ()),
    "port 0": ({"url": "https://127.0.0.1:0/hook"}, ()),
    "url too long": ({"url": "https://127.0.0.1:8443/" + "a" * 2100}, ()),
    "private address": ({"url": "https://10.1.2.3/hook"}, ()),
    "metadata address": ({"url": "https://169.254.169.254/latest/meta-data"}, ()),
    "no url": ({"url": ""}, ()),
    "unknown event type": ({"event_types": ["invoice.exploded"]}, ("invoice.exploded",)),
    "test event is not subscribable": ({"event_types": ["webhook.test"]}, ()),
    "no event types": ({"event_types": []}, ()),
    "too many event types": ({"event_types": ["invoice.sealed"] * 33}, ()),
    "description too long": ({"description": "d" * 501}, ()),
    "malformed outlet id": ({"outlet_ids": ["not-a-uuid"]}, ()),
    "unknown outlet id": ({"outlet_ids": [str(uuid.uuid4())]}, ()),
}


@pytest.mark.parametrize("case", sorted(BAD_CREATES))
def test_bad_create_is_a_json_400_and_writes_nothing(admin, webhook_receiver, webhook_mesh, shop, case):
    changes, words = BAD_CREATES[case]
    before = {e["id"] for e in admin.endpoints()}
    rows = _endpoint_rows(webhook_mesh, shop)
    body = {"url": _url(webhook_receiver), "event_types": ["invoice.sealed"], **changes}
    _error(admin.call("POST", "/v1/webhook-endpoints", body), 400, INVALID_ARGUMENT, *words)
    assert {e["id"] for e in admin.endpoints()} == before
    assert _endpoint_rows(webhook_mesh, shop) == rows


def test_another_merchants_outlet_is_refused_like_an_unknown_one(admin, webhook_receiver, other_shop):
    before = {e["id"] for e in admin.endpoints()}
    foreign = other_shop["outlets"][0]["id"]
    answer = admin.call("POST", "/v1/webhook-endpoints",
                        {"url": _url(webhook_receiver), "event_types": ["invoice.sealed"], "outlet_ids": [foreign]})
    missing = str(uuid.uuid4())
    unknown = admin.call("POST", "/v1/webhook-endpoints",
                         {"url": _url(webhook_receiver), "event_types": ["invoice.sealed"], "outlet_ids": [missing]})
    _error(answer, 400, INVALID_ARGUMENT)
    # No oracle: an outlet of another merchant and one that does not exist get the same answer.
    assert answer.json()["message"].replace(foreign, "<id>") == unknown.json()["message"].replace(missing, "<id>")
    assert {e["id"] for e in admin.endpoints()} == before


def test_bad_patch_changes_nothing(admin, webhook_receiver):
    created = admin.create(_url(webhook_receiver), description="kept")
    path = f"/v1/webhook-endpoints/{created['id']}"
    bodies: tuple[dict, ...] = ({"url": "ftp://127.0.0.1/x"}, {"event_types": ["nope"]}, {"event_types": []},
                                {"description": "x" * 501, "url": _url(webhook_receiver)}, {"outlet_ids": ["bad"]})
    for body in bodies:
        _error(admin.call("PATCH", path, body), 400, INVALID_ARGUMENT)
    after = admin.get(created["id"])
    assert {k: after[k] for k in ("url", "event_types", "description", "outlet_ids", "disabled")} == {
        k: created[k] for k in ("url", "event_types", "description", "outlet_ids", "disabled")}


def test_another_merchants_endpoint_is_not_found_and_untouched(admin, other_admin, webhook_receiver):
    theirs = other_admin.create(_url(webhook_receiver), description="theirs")
    path = f"/v1/webhook-endpoints/{theirs['id']}"
    for method, suffix, body in (("GET", "", None), ("PATCH", "", {"description": "mine now"}), ("DELETE", "", None),
                                 ("POST", "/rotate-secret", {}), ("POST", "/test", {}), ("GET", "/deliveries", None),
                                 ("POST", "/resend-failed", {"since": "2020-01-01T00:00:00Z"})):
        _error(admin.call(method, path + suffix, body), 404, NOT_FOUND)
    # The same answer as an id that does not exist at all: no existence oracle.
    _error(admin.call("GET", f"/v1/webhook-endpoints/{uuid.uuid4()}"), 404, NOT_FOUND)
    assert other_admin.get(theirs["id"])["description"] == "theirs"
    assert not other_admin.deliveries(theirs["id"])  # no test event was sent by the other merchant's call
    # Their deliveries are not ours either.
    other_admin.call("POST", f"{path}/test", {})
    [delivery] = other_admin.wait_deliveries(theirs["id"], lambda found: len(found) == 1)
    _error(admin.call("GET", f"/v1/webhook-deliveries/{delivery['id']}"), 404, NOT_FOUND)
    _error(admin.call("POST", f"/v1/webhook-deliveries/{delivery['id']}/resend", {}), 404, NOT_FOUND)
    malformed = admin.call("GET", "/v1/webhook-endpoints/not-a-uuid")
    assert malformed.status_code in (400, 404) and malformed.json()["code"] in (INVALID_ARGUMENT, NOT_FOUND)


def test_merchant_read_looks_and_cannot_change(admin, reader, webhook_receiver):
    created = admin.create(_url(webhook_receiver))
    path = f"/v1/webhook-endpoints/{created['id']}"
    assert reader.call("GET", "/v1/webhook-endpoints").status_code == 200
    assert reader.call("GET", f"{path}/deliveries").status_code == 200
    before = {e["id"] for e in admin.endpoints()}
    for method, suffix, body in (("POST", "", {"url": _url(webhook_receiver), "event_types": ["invoice.sealed"]}),
                                 ("PATCH", f"/{created['id']}", {"description": "read key was here"}),
                                 ("DELETE", f"/{created['id']}", None), ("POST", f"/{created['id']}/rotate-secret", {}),
                                 ("POST", f"/{created['id']}/test", {}),
                                 ("POST", f"/{created['id']}/resend-failed", {"since": "2020-01-01T00:00:00Z"})):
        _error(reader.call(method, "/v1/webhook-endpoints" + suffix, body), 403, PERMISSION_DENIED)
    assert {e["id"] for e in admin.endpoints()} == before
    assert admin.get(created["id"])["description"] == created["description"]
    assert not admin.deliveries(created["id"])


def test_outlet_pos_keys_and_no_key_are_refused(till, admin, webhook_mesh, webhook_receiver):
    created = admin.create(_url(webhook_receiver))
    for method, path, body in (("GET", "/v1/webhook-endpoints", None), ("GET", "/v1/webhook-event-types", None),
                               ("GET", f"/v1/webhook-endpoints/{created['id']}", None),
                               ("POST", "/v1/webhook-endpoints", {"url": _url(webhook_receiver),
                                                                  "event_types": ["invoice.sealed"]}),
                               ("DELETE", f"/v1/webhook-endpoints/{created['id']}", None)):
        _error(till.call(method, path, body), 403, PERMISSION_DENIED)
    anonymous = WebhooksApi(webhook_mesh.gateway_url, None)
    try:
        _error(anonymous.call("GET", "/v1/webhook-endpoints"), 401, UNAUTHENTICATED)
    finally:
        anonymous.close()
    wrong = WebhooksApi(webhook_mesh.gateway_url, "fk_live_notarealkey")
    try:
        _error(wrong.call("GET", "/v1/webhook-endpoints"), 401, UNAUTHENTICATED)
    finally:
        wrong.close()
    assert admin.get(created["id"])["id"] == created["id"]


def test_rotate_answers_a_new_secret_once(admin, reader, webhook_receiver):
    created = admin.create(_url(webhook_receiver))
    answer = admin.call("POST", f"/v1/webhook-endpoints/{created['id']}/rotate-secret", {"overlap_seconds": 60})
    assert answer.status_code == 200, answer.text
    rotated = answer.json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
    assert rotated["previous_secret_expires_at"]
    got = reader.call("GET", f"/v1/webhook-endpoints/{created['id']}")
    _secret_free(got)
    assert got.json()["previous_secret_expires_at"]
    _error(admin.call("POST", f"/v1/webhook-endpoints/{created['id']}/rotate-secret", {"overlap_seconds": 10**7}),
           400, INVALID_ARGUMENT)


def test_resend_failed_needs_since(admin, webhook_receiver):
    created = admin.create(_url(webhook_receiver))
    _error(admin.call("POST", f"/v1/webhook-endpoints/{created['id']}/resend-failed", {}), 400, INVALID_ARGUMENT)
    _error(admin.call("GET", f"/v1/webhook-endpoints/{created['id']}/deliveries", params={"status": "lost"}),
           400, INVALID_ARGUMENT)


def test_no_endpoint_secret_reaches_a_log(webhook_mesh, admin, webhook_receiver):
    """Run last in this module: after every create and rotate above, no log line carries a secret."""
    created = admin.create(_url(webhook_receiver))
    admin.call("POST", f"/v1/webhook-endpoints/{created['id']}/rotate-secret", {})
    logs = sorted(webhook_mesh.log_dir.glob("*.log"))
    assert any(log.name.startswith("webhooks") for log in logs), logs
    for log in logs:
        text = log.read_text(errors="replace")
        assert "whsec_" not in text and created["secret"].removeprefix("whsec_") not in text, log.name
