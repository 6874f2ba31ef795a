-- 0008: items whose moderation job was dead-lettered. The sweeper re-enqueues unscored items; without
-- this it re-enqueued such an item at every sweep, and each round of failures added a dead letter.
-- Now it waits until `retry_after`: 10 minutes after the first dead letter, doubling, at most a day.
CREATE TABLE moderation_failures (
    kind         text NOT NULL,  -- the job's kind: 'vybe', 'comment' or 'app_item'
    item_id      uuid NOT NULL,
    failures     integer NOT NULL DEFAULT 1,
    last_error   text,
    retry_after  timestamptz NOT NULL,
    PRIMARY KEY (kind, item_id)
);
