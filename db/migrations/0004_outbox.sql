-- 0004: the transactional outbox. Every event a write announces is stored here in
-- the write's own transaction, then published to Redis after COMMIT (at once by
-- the process that committed it, or later by a relay) and deleted in batches.
--
-- Ordered channels carry a per-channel sequence number taken from
-- outbox_channels in the same transaction: the row lock is held until COMMIT,
-- so a channel's sequence numbers follow commit order with no holes, and the
-- publish script in Redis applies them strictly in that order, once each.
-- Unordered rows (the moderation job queue) have no sequence.

CREATE TABLE outbox_channels (
    channel  text PRIMARY KEY,
    seq      bigint NOT NULL
);

CREATE TABLE outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel     text NOT NULL,
    seq         bigint,
    -- One or more encoded events for this channel, separated by U+001E (JSON
    -- never contains a raw control character, so the separator is unambiguous).
    messages    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX outbox_created_idx ON outbox (created_at);
