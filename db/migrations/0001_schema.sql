-- 0001: the VYBE social graph the real-time layer serves.
-- Source: shared/seeds/000 (Prisma schema, @@map names). Only the parts the
-- gateway, the write path and moderation touch are modelled; the rest of the
-- product (subscriptions, loopchain steps, analytics) lives elsewhere.

CREATE TYPE user_role AS ENUM ('MEMBER', 'CREATOR', 'MODERATOR', 'ADMIN');
CREATE TYPE privacy_level AS ENUM ('PUBLIC', 'FRIENDS_ONLY', 'PRIVATE', 'ANONYMOUS');
CREATE TYPE shared_vybe_type AS ENUM ('REFLECTION', 'MILESTONE', 'INSPIRATION', 'GRATITUDE', 'PROGRESS_UPDATE');
CREATE TYPE reaction_type AS ENUM ('HEART', 'CLAP', 'FIRE', 'PEACE', 'INSPIRE', 'STRENGTH', 'GRATITUDE', 'MINDFUL');
CREATE TYPE reactable_type AS ENUM ('LOOPROOM', 'SHARED_VYBE', 'COMMENT');
CREATE TYPE looproom_status AS ENUM ('DRAFT', 'PUBLISHED', 'ARCHIVED', 'RESTRICTED');
CREATE TYPE report_type AS ENUM ('SPAM', 'HARASSMENT', 'INAPPROPRIATE_CONTENT', 'SAFETY_CONCERN', 'COPYRIGHT', 'OTHER');
CREATE TYPE report_status AS ENUM ('PENDING', 'REVIEWED', 'RESOLVED', 'DISMISSED');
-- Ours: where a post or comment stands in moderation.
CREATE TYPE moderation_state AS ENUM ('pending', 'approved', 'flagged', 'hidden', 'removed');

-- Users come from the identity provider: id is the JWT `sub`, upserted on first sight.
CREATE TABLE users (
    id              text PRIMARY KEY CHECK (char_length(id) BETWEEN 1 AND 128),
    email           text UNIQUE,
    username        text UNIQUE,
    role            user_role NOT NULL DEFAULT 'MEMBER',
    is_active       boolean NOT NULL DEFAULT true,
    blocked_users   text[] NOT NULL DEFAULT '{}',
    -- Ours: users can be reported too (seed: reports.reported_type 'user').
    is_reported     boolean NOT NULL DEFAULT false,
    report_count    integer NOT NULL DEFAULT 0 CHECK (report_count >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_active_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_profiles (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id             text NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    display_name        text CHECK (char_length(display_name) <= 100),
    bio                 text CHECK (char_length(bio) <= 1000),
    avatar_url          text,
    vibes_shared        integer NOT NULL DEFAULT 0 CHECK (vibes_shared >= 0),
    positive_reactions  integer NOT NULL DEFAULT 0 CHECK (positive_reactions >= 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE looprooms (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    title           text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    slug            text NOT NULL UNIQUE,
    description     text,
    status          looproom_status NOT NULL DEFAULT 'DRAFT',
    creator_id      text NOT NULL REFERENCES users (id),
    view_count      integer NOT NULL DEFAULT 0 CHECK (view_count >= 0),
    reaction_count  integer NOT NULL DEFAULT 0 CHECK (reaction_count >= 0),
    share_count     integer NOT NULL DEFAULT 0 CHECK (share_count >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE shared_vybes (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id           text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    type              shared_vybe_type NOT NULL DEFAULT 'REFLECTION',
    content           text NOT NULL CHECK (char_length(content) BETWEEN 1 AND 5000),
    is_anonymous      boolean NOT NULL DEFAULT false,
    privacy_level     privacy_level NOT NULL DEFAULT 'PUBLIC',
    looproom_id       uuid REFERENCES looprooms (id) ON DELETE SET NULL,
    loopchain_id      text,
    reaction_count    integer NOT NULL DEFAULT 0 CHECK (reaction_count >= 0),
    comment_count     integer NOT NULL DEFAULT 0 CHECK (comment_count >= 0),
    share_count       integer NOT NULL DEFAULT 0 CHECK (share_count >= 0),
    is_reported       boolean NOT NULL DEFAULT false,
    report_count      integer NOT NULL DEFAULT 0 CHECK (report_count >= 0),
    moderation_state  moderation_state NOT NULL DEFAULT 'pending',
    moderated_at      timestamptz,
    moderator_note    text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE comments (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id           text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    shared_vybe_id    uuid NOT NULL REFERENCES shared_vybes (id) ON DELETE CASCADE,
    -- Replies (as the community seed does); a reply's parent is on the same vybe.
    parent_id         uuid REFERENCES comments (id) ON DELETE CASCADE,
    content           text NOT NULL CHECK (char_length(content) BETWEEN 1 AND 2000),
    is_anonymous      boolean NOT NULL DEFAULT false,
    reaction_count    integer NOT NULL DEFAULT 0 CHECK (reaction_count >= 0),
    is_reported       boolean NOT NULL DEFAULT false,
    report_count      integer NOT NULL DEFAULT 0 CHECK (report_count >= 0),
    moderation_state  moderation_state NOT NULL DEFAULT 'pending',
    moderated_at      timestamptz,
    moderator_note    text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Shares are rows so share_count can be recomputed like every other counter.
CREATE TABLE shares (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    shared_vybe_id  uuid NOT NULL REFERENCES shared_vybes (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Polymorphic target, as in the seed. No foreign key on reactable_id: a key to
-- the hot row makes every insert take FOR KEY SHARE on it (the write path locks
-- it anyway to move the counter). Integrity is kept by the write path, which
-- checks the target in the same transaction, and by the cleanup triggers below.
CREATE TABLE reactions (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    type            reaction_type NOT NULL,
    reactable_type  reactable_type NOT NULL,
    reactable_id    uuid NOT NULL,
    is_anonymous    boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT reactions_unique_key UNIQUE (user_id, reactable_type, reactable_id, type)
);

CREATE TABLE reports (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    reporter_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    reported_type  text NOT NULL CHECK (reported_type IN ('user', 'shared_vybe', 'comment')),
    reported_id    text NOT NULL,
    type           report_type NOT NULL,
    status         report_status NOT NULL DEFAULT 'PENDING',
    description    text CHECK (char_length(description) <= 1000),
    reviewed_by    text REFERENCES users (id) ON DELETE SET NULL,
    reviewed_at    timestamptz,
    resolution     text,
    action_taken   text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- One report per reporter and target; a repeat is a no-op.
    CONSTRAINT reports_one_per_reporter UNIQUE (reporter_id, reported_type, reported_id)
);

-- The account that files the model's reports (seed: every report has a reporter).
INSERT INTO users (id, username, role) VALUES ('system:moderation', 'moderation-bot', 'ADMIN');

-- Feed: keyset pagination on (created_at, id), public and visible first.
CREATE INDEX shared_vybes_feed_idx ON shared_vybes (created_at DESC, id DESC)
    WHERE moderation_state IN ('pending', 'approved', 'flagged') AND privacy_level IN ('PUBLIC', 'ANONYMOUS');
CREATE INDEX shared_vybes_user_created_idx ON shared_vybes (user_id, created_at DESC);
CREATE INDEX shared_vybes_looproom_created_idx ON shared_vybes (looproom_id, created_at DESC) WHERE looproom_id IS NOT NULL;
CREATE INDEX shared_vybes_unscored_idx ON shared_vybes (created_at) WHERE moderation_state = 'pending';
CREATE INDEX comments_vybe_created_idx ON comments (shared_vybe_id, created_at, id);
CREATE INDEX comments_parent_idx ON comments (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX comments_user_idx ON comments (user_id);
CREATE INDEX comments_unscored_idx ON comments (created_at) WHERE moderation_state = 'pending';
CREATE INDEX shares_vybe_idx ON shares (shared_vybe_id);
CREATE INDEX reactions_target_idx ON reactions (reactable_type, reactable_id);
CREATE INDEX reactions_user_type_idx ON reactions (user_id, reactable_type, created_at DESC);
CREATE INDEX reports_open_idx ON reports (status, created_at) WHERE status IN ('PENDING', 'REVIEWED');
CREATE INDEX reports_target_idx ON reports (reported_type, reported_id);
CREATE INDEX looprooms_creator_idx ON looprooms (creator_id);
