-- 0003: moderation. Scores per item and model version, one case per target
-- (reopened, never duplicated), and an audit log of every moderator action.

CREATE TABLE moderation_scores (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target_type    text NOT NULL CHECK (target_type IN ('shared_vybe', 'comment')),
    target_id      uuid NOT NULL,
    model_name     text NOT NULL,
    model_version  text NOT NULL,
    scores         jsonb NOT NULL,
    decision       text NOT NULL CHECK (decision IN ('approve', 'flag', 'hide', 'shadow')),
    reasons        text[] NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Scoring is idempotent: one result per item and model version.
    CONSTRAINT moderation_scores_once UNIQUE (target_type, target_id, model_name, model_version)
);

CREATE TABLE moderation_cases (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    target_type       text NOT NULL CHECK (target_type IN ('shared_vybe', 'comment', 'user')),
    target_id         text NOT NULL,
    state             text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'resolved')),
    -- Bumped by every change; actions carry the version they saw (optimistic concurrency).
    version           integer NOT NULL DEFAULT 1,
    reasons           text[] NOT NULL DEFAULT '{}',
    scores            jsonb,
    model_flagged     boolean NOT NULL DEFAULT false,
    claimed_by        text REFERENCES users (id) ON DELETE SET NULL,
    claim_expires_at  timestamptz,
    resolution        text CHECK (resolution IN ('remove', 'hide', 'restore', 'dismiss')),
    resolved_by       text REFERENCES users (id) ON DELETE SET NULL,
    resolved_at       timestamptz,
    note              text CHECK (char_length(note) <= 2000),
    opened_at         timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT moderation_cases_one_per_target UNIQUE (target_type, target_id)
);
CREATE INDEX moderation_cases_open_idx ON moderation_cases (opened_at) WHERE state = 'open';

CREATE TABLE moderation_audit (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor_id     text NOT NULL,
    action       text NOT NULL,
    case_id      uuid REFERENCES moderation_cases (id) ON DELETE SET NULL,
    target_type  text,
    target_id    text,
    note         text,
    detail       jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX moderation_audit_case_idx ON moderation_audit (case_id, created_at);
