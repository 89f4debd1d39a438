"""Endpoint validation, event patterns, tenants, and the relay's own options."""

from __future__ import annotations

import pytest

from dispatch_plugins.webhooks import EVENT_TYPES, Endpoint, Relay, RelayConfigError
from dispatch_plugins.webhooks.catalog import matches

SECRET = "endpoint-secret-0123456789"


def make(**kwargs: object) -> Endpoint:
    fields: dict[str, object] = {"name": "ops", "url": "https://hooks.example.com/x"}
    fields["secret"] = SECRET
    fields.update(kwargs)
    return Endpoint(**fields)  # type: ignore[arg-type]


def test_the_catalogue_has_the_twelve_types() -> None:
    assert len(EVENT_TYPES) == len(set(EVENT_TYPES)) == 12
    assert {t.rsplit(".", 1)[0] for t in EVENT_TYPES} == {
        "dispatch.job",
        "dispatch.workflow",
        "dispatch.cron",
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"url": "ftp://hooks.example.com/x"},
            r"endpoint 'ops': url: scheme must be http or https",
        ),
        ({"url": "hooks.example.com/x"}, r"endpoint 'ops': url: scheme must be http or https"),
        ({"url": "https:///path"}, r"endpoint 'ops': url: no host"),
        ({"url": "https://h.example:99999/"}, r"endpoint 'ops': url:"),
        ({"secret": "short"}, r"endpoint 'ops': secret: .*at least 16 characters"),
        ({"secret": [SECRET, "short"]}, r"endpoint 'ops': secret: .*at least 16"),
        ({"secret": []}, r"endpoint 'ops': secret: give at least one"),
        ({"events": ["dispatch.job.done"]}, r"endpoint 'ops': events: unknown event type"),
        ({"events": ["dispatch.jobs.*"]}, r"endpoint 'ops': events: unknown event type"),
        ({"events": ["dispatch.job*"]}, r"endpoint 'ops': events: .*'\*' may only"),
        ({"events": []}, r"endpoint 'ops': events: give at least one"),
        ({"tenant": ""}, r"endpoint 'ops': tenant"),
        ({"name": " "}, r"name must be a non-empty string"),
    ],
)
def test_invalid_fields_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(RelayConfigError, match=message):
        make(**kwargs)


def test_duplicate_endpoint_names_are_refused() -> None:
    with pytest.raises(RelayConfigError, match="endpoint 'ops': name: duplicate endpoint name"):
        Relay([make(), make(url="https://other.example.com/")])


def test_the_secret_stays_out_of_repr() -> None:
    endpoint = make(secret=[SECRET, "second-secret-0123456"])
    assert SECRET not in repr(endpoint)
    assert endpoint.secrets == (SECRET, "second-secret-0123456")
    assert make().secrets == (SECRET,)


def test_patterns_select_types() -> None:
    assert matches(["*"], "dispatch.cron.fired")
    assert matches(["dispatch.job.*"], "dispatch.job.dlq")
    assert not matches(["dispatch.job.*"], "dispatch.workflow.failed")
    assert matches(["dispatch.*"], "dispatch.workflow.failed")
    assert matches(["dispatch.job.failed", "dispatch.cron.fired"], "dispatch.cron.fired")
    assert not matches(["dispatch.job.failed"], "dispatch.job.dlq")


def test_tenant_none_is_an_operator_endpoint_and_a_tenant_sees_only_its_own() -> None:
    operator = make()
    acme = make(tenant="acme", events="dispatch.job.*")
    assert operator.wants("dispatch.job.failed", None)
    assert operator.wants("dispatch.job.failed", "acme")
    assert operator.wants("dispatch.job.failed", "bravo")
    assert acme.wants("dispatch.job.failed", "acme")
    assert not acme.wants("dispatch.job.failed", "bravo")
    assert not acme.wants("dispatch.job.failed", None)
    assert not acme.wants("dispatch.workflow.failed", "acme")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"timeout": 0}, "timeout"),
        ({"connect_timeout": -1}, "timeout"),
        ({"queue": ""}, "queue"),
    ],
)
def test_invalid_relay_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(RelayConfigError, match=message):
        Relay([make()], **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["false", "no", 0, 1, None])
def test_allow_private_must_be_a_real_boolean(value: object) -> None:
    """A configuration file's "allow_private": "false" is a non-empty string, truthy: taken
    as given it would turn the SSRF guard off. Anything but true or false is refused."""
    with pytest.raises(RelayConfigError, match="allow_private must be true or false"):
        Endpoint(
            name="ops",
            url="https://hooks.example.com/x",
            secret="s" * 32,
            allow_private=value,  # type: ignore[arg-type]
        )
    from_file = {"name": "ops", "url": "https://hooks.example.com/x", "secret": "s" * 32}
    with pytest.raises(RelayConfigError, match="allow_private"):
        Relay.from_config({"endpoints": [{**from_file, "allow_private": value}]})
