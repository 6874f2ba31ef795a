"""Reactions: the single-transaction path and the ReactionWriter's group commit."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from db.counters import check_counters
from db.writes import (
    NotFound,
    ReactionWriter,
    Unavailable,
    WriteError,
    WriterClosed,
    comment,
    post_vybe,
    react,
    unreact,
)
from test_writes_support import looproom, set_state, snapshot, users, wait_for_lock_waiter, wrong_counters

pytestmark = pytest.mark.anyio
V = "SHARED_VYBE"


async def test_react_twice_is_a_noop_and_unreact_likewise(pool: asyncpg.Pool) -> None:
    """The same reaction twice counts once (applied=False); removing an absent one changes nothing."""
    await users(pool, "ann", "bob")
    v = await post_vybe(pool, "ann", content="x")
    first = await react(pool, "bob", target_type=V, target_id=v.id, reaction_type="HEART")
    again = await react(pool, "bob", target_type=V, target_id=str(v.id), reaction_type="HEART")
    other = await react(pool, "bob", target_type=V, target_id=v.id, reaction_type="FIRE")
    assert (first.applied, again.applied, other.applied) == (True, False, True)
    assert (first.reaction_count, again.reaction_count, other.reaction_count) == (1, 1, 2)
    assert first.target_author_id == "ann"
    gone = await unreact(pool, "bob", target_type=V, target_id=v.id, reaction_type="HEART")
    absent = await unreact(pool, "bob", target_type=V, target_id=v.id, reaction_type="HEART")
    assert (gone.applied, gone.reaction_count, absent.applied, absent.reaction_count) == (True, 1, False, 1)
    assert await pool.fetchval("SELECT positive_reactions FROM user_profiles WHERE user_id = 'ann'") == 1


async def test_reactions_on_comments_and_looprooms_count_for_their_author(pool: asyncpg.Pool) -> None:
    """A comment's reactions credit the commenter; a looproom's credit its creator."""
    await users(pool, "ann", "bob", "cat")
    v = await post_vybe(pool, "ann", content="x")
    c = await comment(pool, "bob", vybe_id=v.id, content="y")
    room = await looproom(pool, "cat")
    rc = await react(pool, "ann", target_type="COMMENT", target_id=c.id, reaction_type="CLAP")
    rl = await react(pool, "ann", target_type="LOOPROOM", target_id=room, reaction_type="PEACE")  # type: ignore[arg-type]
    assert (rc.target_author_id, rc.reaction_count, rl.target_author_id, rl.reaction_count) == ("bob", 1, "cat", 1)
    assert (rc.vybe_id, rl.vybe_id) == (v.id, None)  # the channel a comment's reaction goes to
    positive = dict(await pool.fetch("SELECT user_id, positive_reactions FROM user_profiles"))
    assert positive == {"ann": 0, "bob": 1, "cat": 1}
    assert await wrong_counters(pool) == {}


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"reaction_type": "LIKE"}, "invalid_value"),
    ({"target_type": "USER"}, "invalid_value"),
    ({"target_id": uuid.uuid4()}, "not_found"),
    ({"target_id": "garbage"}, "not_found"),
    ({"target_type": "COMMENT"}, "not_found"),  # the vybe's id is no comment's id
    ({"user": "ghost"}, "not_found"),
    ({"private": True}, "not_found"),
])
async def test_bad_reaction_is_refused_and_nothing_stored(pool: asyncpg.Pool, kwargs: dict[str, object],
                                                          code: str) -> None:
    """Bad values, unknown targets or users, and others' private vybes raise their code; nothing is stored."""
    await users(pool, "ann", "bob")
    v = await post_vybe(pool, "ann", content="x", privacy_level="PRIVATE" if kwargs.pop("private", False) else "PUBLIC")
    args = {"target_type": V, "target_id": v.id, "reaction_type": "HEART", **kwargs}
    user = str(args.pop("user", "bob"))
    before = await snapshot(pool)
    with pytest.raises(WriteError) as info:
        await react(pool, user, **args)  # type: ignore[arg-type]
    assert info.value.code == code
    async with ReactionWriter(pool) as writer:
        with pytest.raises(WriteError) as info:
            await writer.react(user, **args)  # type: ignore[arg-type]
    assert info.value.code == code
    assert await snapshot(pool) == before


async def test_writer_applies_one_users_toggles_in_order_within_a_batch(pool: asyncpg.Pool) -> None:
    """react, unreact, react, react by one user in one batch: applied True, True, True, False, and it stays."""
    await users(pool, "ann", "bob")
    v = await post_vybe(pool, "ann", content="x")
    async with ReactionWriter(pool, batch_ms=200, batch_max=100) as writer:
        ops = [writer.react, writer.unreact, writer.react, writer.react]
        results = await asyncio.gather(*(op("bob", target_type=V, target_id=v.id, reaction_type="HEART") for op in ops))
        assert writer.batches == 1
    assert [r.applied for r in results] == [True, True, True, False]
    assert {r.reaction_count for r in results} == {1}  # the post-commit count, for every caller
    assert await pool.fetchval("SELECT count(*) FROM reactions") == 1
    assert await wrong_counters(pool) == {}


async def test_writer_one_bad_operation_fails_alone(pool: asyncpg.Pool) -> None:
    """In one batch: unknown target, hidden target, unknown user each get their own error; the rest commit."""
    await users(pool, "ann", "bob", "cat")
    v = await post_vybe(pool, "ann", content="ok")
    hidden = await post_vybe(pool, "ann", content="hidden")
    await set_state(pool, "shared_vybes", hidden.id, "hidden")
    async with ReactionWriter(pool, batch_ms=200, batch_max=100) as writer:
        results = await asyncio.gather(
            writer.react("bob", target_type=V, target_id=v.id, reaction_type="HEART"),
            writer.react("bob", target_type=V, target_id=uuid.uuid4(), reaction_type="HEART"),
            writer.react("bob", target_type=V, target_id=hidden.id, reaction_type="HEART"),
            writer.react("ghost", target_type=V, target_id=v.id, reaction_type="HEART"),
            writer.react("cat", target_type=V, target_id=v.id, reaction_type="FIRE"),
            return_exceptions=True,
        )
        assert writer.batches == 1
    ok1, unknown, unavailable, ghost, ok2 = results
    assert isinstance(unknown, NotFound) and isinstance(ghost, NotFound)
    assert isinstance(unavailable, Unavailable)
    assert not isinstance(ok1, BaseException) and not isinstance(ok2, BaseException)
    assert (ok1.applied, ok2.applied, ok1.reaction_count, ok2.reaction_count) == (True, True, 2, 2)
    assert await pool.fetchval("SELECT count(*) FROM reactions") == 2
    assert await wrong_counters(pool) == {}


async def test_writer_batches_many_targets_and_counts_are_exact(pool: asyncpg.Pool) -> None:
    """200 users reacting to three targets at once land in few batches with exact counts."""
    await users(pool, "ann", *(f"u{i}" for i in range(200)))
    v1 = await post_vybe(pool, "ann", content="1")
    v2 = await post_vybe(pool, "ann", content="2")
    c = await comment(pool, "ann", vybe_id=v1.id, content="c")
    targets = [(V, v1.id), (V, v2.id), ("COMMENT", c.id)]
    async with ReactionWriter(pool, batch_ms=5, batch_max=500) as writer:
        results = await asyncio.gather(*(
            writer.react(f"u{i}", target_type=t, target_id=tid, reaction_type="HEART")
            for i in range(200) for t, tid in targets))
        assert writer.batches <= 5
    assert all(r.applied for r in results)
    final = {(r.target_type, r.target_id): r.reaction_count for r in results}
    assert set(final.values()) == {200}
    assert await pool.fetchval("SELECT positive_reactions FROM user_profiles WHERE user_id = 'ann'") == 600


async def _block_writer_mid_transaction(pool: asyncpg.Pool, writer: ReactionWriter, vybe_id: object,
                                        holder: asyncpg.Connection) -> list[asyncio.Task[object]]:
    """Start a batch that has inserted ann's reaction (counter moved) and then blocks.

    Round 1 inserts bob's reaction (its trigger moves the counter) and removes
    cat's absent one; round 2 inserts cat's reaction, whose FK check waits on
    the users row ``holder`` keeps locked.
    """
    await holder.execute("BEGIN")
    await holder.execute("SELECT 1 FROM users WHERE id = 'cat' FOR UPDATE")
    args = {"target_type": V, "target_id": vybe_id, "reaction_type": "HEART"}
    tasks = [
        asyncio.ensure_future(writer.react("bob", **args)),  # type: ignore[arg-type]
        asyncio.ensure_future(writer.unreact("cat", **args)),  # type: ignore[arg-type]
        asyncio.ensure_future(writer.react("cat", **args)),  # type: ignore[arg-type]
    ]
    await wait_for_lock_waiter(pool)
    return tasks


async def test_writer_cancelled_mid_transaction_leaves_nothing_and_callers_get_an_error(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """aclose() during a batch's transaction: rolled back (no reaction, counters exact); callers get WriterClosed,
    `unavailable` with a `retry_after` (the client retries, on its reconnect to another node)."""
    await users(pool, "ann", "bob", "cat")
    v = await post_vybe(pool, "ann", content="x")
    holder = await asyncpg.connect(database_url)
    try:
        writer = ReactionWriter(pool, batch_ms=50)
        writer.start()
        tasks = await _block_writer_mid_transaction(pool, writer, v.id, holder)
        await asyncio.wait_for(writer.aclose(), 5)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, WriterClosed) for r in results), results
        assert {(r.code, r.retry_after) for r in results} == {("unavailable", 1.0)}  # `unavailable` says when
        with pytest.raises(WriterClosed) as refused:
            await writer.react("bob", target_type=V, target_id=v.id, reaction_type="HEART")
        assert refused.value.retry_after == 1.0
    finally:
        await holder.close()
    assert await pool.fetchval("SELECT count(*) FROM reactions") == 0
    assert await pool.fetchval("SELECT reaction_count FROM shared_vybes WHERE id = $1", v.id) == 0
    assert await check_counters(pool) == []


async def test_caller_cancelled_mid_transaction_leaves_nothing(pool: asyncpg.Pool, database_url: str) -> None:
    """A single-transaction write whose task is cancelled while blocked is rolled back entirely."""
    await users(pool, "ann", "cat")
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("BEGIN")
        await holder.execute("SELECT 1 FROM users WHERE id = 'cat' FOR UPDATE")
        task = asyncio.ensure_future(post_vybe(pool, "cat", content="x", request_id="r"))
        await wait_for_lock_waiter(pool)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await holder.execute("ROLLBACK")
    finally:
        await holder.close()
    assert await pool.fetchval("SELECT count(*) FROM shared_vybes") == 0
    assert await pool.fetchval("SELECT count(*) FROM idempotency_keys") == 0
    assert await wrong_counters(pool) == {}


async def test_killed_connection_mid_batch_is_retried_and_applied_once(pool: asyncpg.Pool, database_url: str) -> None:
    """pg_terminate_backend on the writer's connection mid-transaction: nothing half-applied; the rerun applies once."""
    await users(pool, "ann", "bob", "cat")
    v = await post_vybe(pool, "ann", content="x")
    holder = await asyncpg.connect(database_url)
    try:
        async with ReactionWriter(pool, batch_ms=50) as writer:
            tasks = await _block_writer_mid_transaction(pool, writer, v.id, holder)
            victim = await wait_for_lock_waiter(pool)
            await pool.execute("SELECT pg_terminate_backend($1)", victim)
            # Killed: its transaction is gone; the counter shows nothing of it.
            await asyncio.sleep(0.2)
            assert await pool.fetchval("SELECT reaction_count FROM shared_vybes WHERE id = $1", v.id) == 0
            await holder.execute("ROLLBACK")
            results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    finally:
        await holder.close()
    assert [r.applied for r in results] == [True, False, True]
    assert results[-1].reaction_count == 2
    assert await pool.fetchval("SELECT count(*) FROM reactions") == 2
    assert await wrong_counters(pool) == {}


async def test_killed_connection_mid_write_leaves_nothing(pool: asyncpg.Pool, database_url: str) -> None:
    """A single write whose backend is terminated mid-transaction raises and stores nothing."""
    await users(pool, "ann", "cat")
    v = await post_vybe(pool, "ann", content="x")
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("BEGIN")
        await holder.execute("SELECT 1 FROM users WHERE id = 'cat' FOR UPDATE")
        task = asyncio.ensure_future(comment(pool, "cat", vybe_id=v.id, content="c", request_id="r"))
        victim = await wait_for_lock_waiter(pool)
        await pool.execute("SELECT pg_terminate_backend($1)", victim)
        with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.AdminShutdownError, asyncpg.InterfaceError)):
            await task
        await holder.execute("ROLLBACK")
    finally:
        await holder.close()
    assert await pool.fetchval("SELECT count(*) FROM comments") == 0
    assert await pool.fetchval("SELECT comment_count FROM shared_vybes WHERE id = $1", v.id) == 0
    assert await pool.fetchval("SELECT count(*) FROM idempotency_keys") == 0


async def test_writer_survives_a_broken_batch(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch that fails in a way no retry covers (asyncpg's InternalClientError after a lost
    connection) answers its callers `unavailable` with retry_after; the writer keeps serving."""
    from db.writes import writer as writer_module

    await users(pool, "ann", "bob")
    v = await post_vybe(pool, "ann", content="x")
    real = writer_module._apply_batch
    calls = 0

    async def broken_once(conn: asyncpg.Connection, batch: list[object]) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress")
        return await real(conn, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(writer_module, "_apply_batch", broken_once)
    async with ReactionWriter(pool) as writer:
        with pytest.raises(WriteError) as failed:
            await writer.react("bob", target_type=V, target_id=v.id, reaction_type="HEART")
        assert failed.value.code == "unavailable" and failed.value.retry_after
        result = await writer.react("bob", target_type=V, target_id=v.id, reaction_type="HEART")
        assert result.applied and result.reaction_count == 1
        assert writer.task.running and writer.task.restarts == 0


async def test_a_commit_with_unknown_outcome_is_not_rerun(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection breaks during COMMIT (it did commit): the batch is not run again, so a toggle
    within it is not applied twice nor announced twice; callers get `unavailable` and may retry."""
    from asyncpg.transaction import Transaction


    await users(pool, "ann", "bob")
    v = await post_vybe(pool, "ann", content="x")
    real_commit = Transaction.commit
    broken = True

    async def commit_then_break(self: Transaction) -> None:
        nonlocal broken
        await real_commit(self)
        if broken:
            broken = False
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")

    monkeypatch.setattr(Transaction, "commit", commit_then_break)
    from common.events import reactions_changed

    async with ReactionWriter(pool, batch_ms=30, events=reactions_changed) as writer:
        args = {"target_type": V, "target_id": v.id, "reaction_type": "HEART"}
        results = await asyncio.gather(writer.react("bob", **args), writer.unreact("bob", **args),
                                       return_exceptions=True)
        assert all(isinstance(r, WriteError) and r.code == "unavailable" for r in results), results
        assert await pool.fetchval("SELECT count(*) FROM reactions") == 0  # react then unreact, once each
        assert await pool.fetchval("SELECT count(*) FROM outbox WHERE channel = $1", f"vybe:{v.id}") == 1
        again = await writer.react("bob", **args)
    assert again.applied and again.reaction_count == 1
    assert await wrong_counters(pool) == {}
