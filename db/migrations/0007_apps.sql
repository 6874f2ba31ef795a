-- 0007: the platform for the sister apps (issue 15): apps and their API keys, app items (texts
-- moderated as a service, and client publications on moderated namespaces), the server API's
-- idempotency keys, and webhook deliveries.

-- An app served by this deployment: the gateway's own content needs none.
CREATE TABLE apps (
    id              text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,39}$'),
    name            text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    -- Where moderation outcomes are POSTed (NULL: read back by id only), signed with the secret.
    webhook_url     text CHECK (webhook_url ~ '^https?://'),
    webhook_secret  text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- API keys of trusted backends, several per app so a key is rotated without downtime: create
-- the new one, deploy it, revoke the old. Only a hash of the secret is kept.
CREATE TABLE api_keys (
    id            text PRIMARY KEY,
    app_id        text NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    secret_hash   bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
CREATE INDEX api_keys_app_idx ON api_keys (app_id);

-- A text an app asked us to moderate, or a client publication on a moderated namespace (then
-- `channel` and `payload` are set, and `held` while it waits for its score or a moderator).
CREATE TABLE app_items (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    app_id            text NOT NULL,
    content_type      text NOT NULL CHECK (char_length(content_type) BETWEEN 1 AND 64),
    content_id        text NOT NULL CHECK (char_length(content_id) BETWEEN 1 AND 200),
    user_id           text NOT NULL CHECK (char_length(user_id) BETWEEN 1 AND 128),
    content           text NOT NULL CHECK (char_length(content) BETWEEN 1 AND 20000),
    channel           text,
    payload           jsonb,
    held              boolean NOT NULL DEFAULT false,
    moderation_state  moderation_state NOT NULL DEFAULT 'pending',
    moderated_at      timestamptz,
    moderator_note    text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT app_items_once UNIQUE (app_id, content_type, content_id)
);
CREATE INDEX app_items_unscored_idx ON app_items (created_at) WHERE moderation_state = 'pending';

-- App items are moderation targets like vybes and comments.
ALTER TABLE moderation_scores DROP CONSTRAINT moderation_scores_target_type_check,
    ADD CONSTRAINT moderation_scores_target_type_check CHECK (target_type IN ('shared_vybe', 'comment', 'app_item'));
ALTER TABLE moderation_cases DROP CONSTRAINT moderation_cases_target_type_check,
    ADD CONSTRAINT moderation_cases_target_type_check
        CHECK (target_type IN ('shared_vybe', 'comment', 'user', 'app_item'));
ALTER TABLE reports DROP CONSTRAINT reports_reported_type_check,
    ADD CONSTRAINT reports_reported_type_check CHECK (reported_type IN ('user', 'shared_vybe', 'comment', 'app_item'));
ALTER TABLE care_cases DROP CONSTRAINT care_cases_target_type_check,
    ADD CONSTRAINT care_cases_target_type_check CHECK (target_type IN ('shared_vybe', 'comment', 'app_item'));

-- The server API's idempotency keys (a backend's retry of a publish publishes once), 24 h.
CREATE TABLE app_requests (
    app_id      text NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    request_id  text NOT NULL CHECK (char_length(request_id) BETWEEN 1 AND 128),
    operation   text NOT NULL,
    result      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, request_id)
);
CREATE INDEX app_requests_created_idx ON app_requests (created_at);

-- Webhook deliveries: written in the transaction of what they announce, POSTed by the workers
-- with retries (exponential backoff) until the app answers 2xx or attempts run out.
CREATE TABLE webhook_deliveries (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app_id        text NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    event         text NOT NULL,
    body          jsonb NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    next_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz,
    failed_at     timestamptz,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_at) WHERE delivered_at IS NULL AND failed_at IS NULL;
