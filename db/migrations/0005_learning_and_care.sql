-- 0005: a model that learns from moderators, and the care route (issue 13).

-- Models trained from moderators' decisions (`vybe moderation retrain`). The heads are JSON
-- (a bundle as moderation.scorers.train writes it), so every worker on every machine loads the
-- active one from here; no row active means the heads shipped in the package.
CREATE TABLE moderation_models (
    version      text PRIMARY KEY,
    kind         text NOT NULL,
    bundle       jsonb NOT NULL,
    report       jsonb NOT NULL DEFAULT '{}',
    state        text NOT NULL DEFAULT 'candidate'
                 CHECK (state IN ('candidate', 'rejected', 'active', 'retired', 'rolled_back')),
    -- The version that was active when this one was promoted (NULL: the shipped heads);
    -- `vybe moderation rollback` returns to it.
    previous     text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    promoted_at  timestamptz
);
CREATE UNIQUE INDEX moderation_models_one_active ON moderation_models ((true)) WHERE state = 'active';

-- Every moderator decision is a label: dismiss/restore = the content is fine (a flag was wrong),
-- hide/remove = it is harmful, with the labels that apply. The text is kept as it was decided,
-- so retraining sees what the moderator saw. One row per case: a later decision replaces it.
CREATE TABLE moderation_labels (
    case_id         uuid PRIMARY KEY REFERENCES moderation_cases (id) ON DELETE CASCADE,
    target_type     text NOT NULL,
    target_id       text NOT NULL,
    text            text NOT NULL,
    harmful         boolean NOT NULL,
    labels          text[] NOT NULL DEFAULT '{}',
    -- What the model said when the case was decided: the labels it flagged (empty: a member
    -- report found what the model missed) and the version whose scores those were.
    model_labels    text[] NOT NULL DEFAULT '{}',
    model_version   text,
    decided_by      text NOT NULL,
    decided_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX moderation_labels_decided_idx ON moderation_labels (decided_at);

-- What a new model rescores: items scored within a recent window (db.learning.rescore_candidates).
CREATE INDEX moderation_scores_created_idx ON moderation_scores (created_at);

-- Set when a newer model rescored an open case's target below every threshold: moderators see
-- it; the case is never dismissed for them.
ALTER TABLE moderation_cases ADD COLUMN model_cleared_by text;

-- Self-harm disclosures: never hidden, never an abuse case. The author gets a caring notice and
-- the post waits here for a moderator who can reach out.
CREATE TABLE care_cases (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    target_type   text NOT NULL CHECK (target_type IN ('shared_vybe', 'comment')),
    target_id     uuid NOT NULL,
    author_id     text NOT NULL,
    score         real NOT NULL,
    model_version text NOT NULL,
    state         text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed')),
    version       integer NOT NULL DEFAULT 1,
    closed_by     text,
    note          text CHECK (char_length(note) <= 2000),
    opened_at     timestamptz NOT NULL DEFAULT now(),
    closed_at     timestamptz,
    CONSTRAINT care_cases_one_per_target UNIQUE (target_type, target_id)
);
CREATE INDEX care_cases_open_idx ON care_cases (opened_at) WHERE state = 'open';
