"""The outbox envelope against real PostgreSQL: a repeated ``event_id`` returns the stored event.

``add_event`` with an id already stored writes nothing and returns the event as first stored (its
payload, correlation, causation and time), whatever the repeat passed; an id taken by another
tenant's event is refused (row-level security hides that event, so it cannot be returned).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.db.pools import PoolManager
from infra.events.outbox import EventIdConflictError, add_event, derived_event_id, latest_event_id

INSERT_TENANT_SQL = "INSERT INTO tenants (id) VALUES (%s) ON CONFLICT DO NOTHING"
COUNT_SQL = "SELECT count(*) AS n FROM event_outbox WHERE event_id = %s"

texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"), max_size=8)
payloads = st.dictionaries(texts, st.integers(-2**31, 2**31) | texts | st.booleans(), max_size=4)
envelopes = st.fixed_dictionaries({"payload": payloads, "correlation_id": st.none() | texts,
                                   "causation_id": st.none() | texts, "actor_id": st.none() | texts,
                                   "version": st.integers(1, 1000), "trace_id": st.none() | texts})


@given(first=envelopes, again=envelopes, same_transaction=st.booleans())
async def test_a_repeated_event_id_returns_the_stored_event(pools: PoolManager, first: dict[str, Any],
                                                            again: dict[str, Any], same_transaction: bool) -> None:
    tenant, event_id = f"t-{uuid.uuid4().hex[:12]}", str(uuid.uuid4())
    common = {"tenant_id": tenant, "event_type": "test.repeated", "target_type": "thing", "target_id": "t1",
              "event_id": event_id}
    async with pools.transaction(tenant) as conn:
        await conn.execute(INSERT_TENANT_SQL, (tenant,))
        stored = await add_event(conn, **common, **first)
        if same_transaction:
            repeated = await add_event(conn, **common, **again)
    if not same_transaction:
        async with pools.transaction(tenant) as conn:
            repeated = await add_event(conn, **common, **again)
    assert repeated == stored
    assert (repeated.payload, repeated.correlation_id, repeated.causation_id) == (
        first["payload"], first["correlation_id"], first["causation_id"])
    async with pools.transaction(tenant) as conn:
        assert (await (await conn.execute(COUNT_SQL, (event_id,))).fetchone())["n"] == 1


async def test_an_event_id_of_another_tenant_is_refused_and_not_revealed(pools: PoolManager) -> None:
    owner, other = f"t-{uuid.uuid4().hex[:12]}", f"t-{uuid.uuid4().hex[:12]}"
    event_id = derived_event_id("envelope-test", uuid.uuid4())
    for tenant in (owner, other):
        async with pools.transaction(tenant) as conn:
            await conn.execute(INSERT_TENANT_SQL, (tenant,))
    async with pools.transaction(owner) as conn:
        await add_event(conn, tenant_id=owner, event_type="test.secret", target_type="thing", target_id="t1",
                        payload={"secret": 1}, event_id=event_id)
    with pytest.raises(EventIdConflictError) as caught:
        async with pools.transaction(other) as conn:
            await add_event(conn, tenant_id=other, event_type="test.x", target_type="thing", target_id="t1",
                            payload={}, event_id=event_id)
    assert "secret" not in str(caught.value)
    async with pools.transaction(other) as conn:
        assert (await (await conn.execute(COUNT_SQL, (event_id,))).fetchone())["n"] == 0


async def test_latest_event_id_picks_the_newest_of_the_asked_types(pools: PoolManager, tenant_id: str) -> None:
    async with pools.transaction(tenant_id) as conn:
        await conn.execute(INSERT_TENANT_SQL, (tenant_id,))
        assert await latest_event_id(conn, tenant_id=tenant_id, target_type="thing", target_id="t1") is None
        ids = {}
        for kind in ("a", "b", "a", "c"):
            ids[kind] = (await add_event(conn, tenant_id=tenant_id, event_type=kind, target_type="thing",
                                         target_id="t1", payload={})).event_id
        await add_event(conn, tenant_id=tenant_id, event_type="a", target_type="thing", target_id="t2", payload={})
    async with pools.transaction(tenant_id) as conn:
        latest = {kinds: await latest_event_id(conn, tenant_id=tenant_id, target_type="thing", target_id="t1",
                                               event_types=kinds) for kinds in [(), ("a",), ("a", "b"), ("z",)]}
    assert latest == {(): ids["c"], ("a",): ids["a"], ("a", "b"): ids["a"], ("z",): None}
    async with pools.transaction(f"t-{uuid.uuid4().hex[:12]}") as conn:  # another tenant sees none of them
        assert await latest_event_id(conn, tenant_id=tenant_id, target_type="thing", target_id="t1") is None
