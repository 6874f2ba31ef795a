-- 0008: items whose moderation job was dead-lettered. The sweeper re-enqueues unscored items (and a new model's
-- rescoring pass enqueues recent ones); without this table such an item was enqueued again at every pass, and
-- each round of failures added a dead letter, forever. Now it waits until `retry_after`: 10 minutes after the
-- first dead letter, twice as long after each further round, at most a day.
CREATE TABLE moderation_failures (
    kind             text NOT NULL CHECK (kind IN ('vybe', 'comment', 'app_item')),  -- the job's kind
    item_id          uuid NOT NULL,
    failures         integer NOT NULL DEFAULT 1,  -- rounds: dead letters while a retry was due
    last_error       text,
    first_failed_at  timestamptz NOT NULL DEFAULT now(),
    retry_after      timestamptz NOT NULL,
    PRIMARY KEY (kind, item_id)
);
