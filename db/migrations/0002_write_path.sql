-- 0002: the write path. Idempotency keys, and counters kept by triggers.
--
-- Every denormalized counter is maintained here, by statement-level AFTER
-- triggers with transition tables: each statement's inserted/deleted rows are
-- aggregated per target and one net delta per target is applied. So every path
-- keeps the counters exact at every commit, the application's writes, FK
-- cascades (deleting a vybe deletes its comments and shares) and admin SQL
-- alike, and a batch of 500 reactions on one hot vybe costs one UPDATE of it.
-- Application code never writes a counter column (db.counters only repairs).
--
-- Deadlocks: a statement touching several targets locks them ORDER BY id, and
-- tables in one order: shared_vybes, comments, looprooms, then user_profiles,
-- then users. The write path takes its target locks in that same order.
--
-- The columns a counter is keyed on (who reacted to what, which vybe a comment
-- is on, a vybe's author...) are immutable: an UPDATE of them is refused, so
-- no UPDATE trigger is needed. Change them by delete + insert.

CREATE TABLE idempotency_keys (
    user_id     text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    request_id  text NOT NULL CHECK (char_length(request_id) BETWEEN 1 AND 128),
    operation   text NOT NULL,
    result      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, request_id)
);
-- For the sweep of keys older than the 24 h retry window.
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- Reactions by target, now with the rest of the unique key: removing
-- (user, type) from a hot vybe with 0001's (reactable_type, reactable_id)
-- index read every reaction of that vybe per removal whenever the planner
-- preferred it to the unique key (generic plans, fresh statistics): 500
-- removals on a vybe with 4,000 reactions took 200 ms instead of 2 ms. With
-- all four columns, either index is an exact lookup; target scans still use
-- the prefix.
DROP INDEX reactions_target_idx;
CREATE INDEX reactions_target_idx ON reactions (reactable_type, reactable_id, type, user_id);

-- ---------------------------------------------------------------------------
-- Counter helpers: apply per-target deltas, locking targets in id order.
-- ---------------------------------------------------------------------------

CREATE FUNCTION counters_bump_vybes(
    p_ids uuid[], p_reactions int[], p_comments int[], p_shares int[], p_reports int[]
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_ids IS NULL OR cardinality(p_ids) = 0 THEN
        RETURN;
    END IF;
    IF cardinality(p_ids) > 1 THEN
        PERFORM 1 FROM shared_vybes WHERE id = ANY (p_ids) ORDER BY id FOR NO KEY UPDATE;
    END IF;
    UPDATE shared_vybes v
       SET reaction_count = v.reaction_count + d.r,
           comment_count  = v.comment_count + d.c,
           share_count    = v.share_count + d.s,
           report_count   = v.report_count + d.rp,
           is_reported    = CASE WHEN d.rp > 0 THEN true
                                 WHEN d.rp < 0 AND v.report_count + d.rp = 0 THEN false
                                 ELSE v.is_reported END
      FROM (SELECT id, coalesce(r, 0) AS r, coalesce(c, 0) AS c, coalesce(s, 0) AS s, coalesce(rp, 0) AS rp
              FROM unnest(p_ids, p_reactions, p_comments, p_shares, p_reports) AS u (id, r, c, s, rp)) d
     WHERE v.id = d.id;
END $$;

CREATE FUNCTION counters_bump_comments(p_ids uuid[], p_reactions int[], p_reports int[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_ids IS NULL OR cardinality(p_ids) = 0 THEN
        RETURN;
    END IF;
    IF cardinality(p_ids) > 1 THEN
        PERFORM 1 FROM comments WHERE id = ANY (p_ids) ORDER BY id FOR NO KEY UPDATE;
    END IF;
    UPDATE comments c
       SET reaction_count = c.reaction_count + d.r,
           report_count   = c.report_count + d.rp,
           is_reported    = CASE WHEN d.rp > 0 THEN true
                                 WHEN d.rp < 0 AND c.report_count + d.rp = 0 THEN false
                                 ELSE c.is_reported END
      FROM (SELECT id, coalesce(r, 0) AS r, coalesce(rp, 0) AS rp
              FROM unnest(p_ids, p_reactions, p_reports) AS u (id, r, rp)) d
     WHERE c.id = d.id;
END $$;

CREATE FUNCTION counters_bump_looprooms(p_ids uuid[], p_reactions int[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_ids IS NULL OR cardinality(p_ids) = 0 THEN
        RETURN;
    END IF;
    IF cardinality(p_ids) > 1 THEN
        PERFORM 1 FROM looprooms WHERE id = ANY (p_ids) ORDER BY id FOR NO KEY UPDATE;
    END IF;
    UPDATE looprooms l SET reaction_count = l.reaction_count + d.r
      FROM unnest(p_ids, p_reactions) AS d (id, r)
     WHERE l.id = d.id;
END $$;

CREATE FUNCTION counters_bump_profiles(p_users text[], p_vibes int[], p_positive int[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_users IS NULL OR cardinality(p_users) = 0 THEN
        RETURN;
    END IF;
    IF cardinality(p_users) > 1 THEN
        PERFORM 1 FROM user_profiles WHERE user_id = ANY (p_users) ORDER BY user_id FOR NO KEY UPDATE;
    END IF;
    UPDATE user_profiles p
       SET vibes_shared       = p.vibes_shared + d.v,
           positive_reactions = p.positive_reactions + d.pr
      FROM (SELECT user_id, coalesce(v, 0) AS v, coalesce(pr, 0) AS pr
              FROM unnest(p_users, p_vibes, p_positive) AS u (user_id, v, pr)) d
     WHERE p.user_id = d.user_id;
END $$;

CREATE FUNCTION counters_bump_users(p_ids text[], p_reports int[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_ids IS NULL OR cardinality(p_ids) = 0 THEN
        RETURN;
    END IF;
    IF cardinality(p_ids) > 1 THEN
        PERFORM 1 FROM users WHERE id = ANY (p_ids) ORDER BY id FOR NO KEY UPDATE;
    END IF;
    UPDATE users u
       SET report_count = u.report_count + d.rp,
           is_reported  = CASE WHEN d.rp > 0 THEN true
                               WHEN d.rp < 0 AND u.report_count + d.rp = 0 THEN false
                               ELSE u.is_reported END
      FROM unnest(p_ids, p_reports) AS d (id, rp)
     WHERE u.id = d.id;
END $$;

-- ---------------------------------------------------------------------------
-- reactions -> reaction_count on the target, positive_reactions on its author.
-- A target already deleted is skipped: its cleanup trigger (below) settles the
-- author's positive_reactions from the deleted row itself.
-- ---------------------------------------------------------------------------

CREATE FUNCTION reactions_counters() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sign int := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
    ids uuid[];
    ns int[];
    authors text[];
BEGIN
    SELECT array_agg(id ORDER BY id), array_agg(n ORDER BY id) INTO ids, ns
      FROM (SELECT reactable_id AS id, sign * count(*)::int AS n FROM changed
             WHERE reactable_type = 'SHARED_VYBE' GROUP BY 1) d;
    PERFORM counters_bump_vybes(ids, ns, NULL, NULL, NULL);

    SELECT array_agg(id ORDER BY id), array_agg(n ORDER BY id) INTO ids, ns
      FROM (SELECT reactable_id AS id, sign * count(*)::int AS n FROM changed
             WHERE reactable_type = 'COMMENT' GROUP BY 1) d;
    PERFORM counters_bump_comments(ids, ns, NULL);

    SELECT array_agg(id ORDER BY id), array_agg(n ORDER BY id) INTO ids, ns
      FROM (SELECT reactable_id AS id, sign * count(*)::int AS n FROM changed
             WHERE reactable_type = 'LOOPROOM' GROUP BY 1) d;
    PERFORM counters_bump_looprooms(ids, ns);

    SELECT array_agg(author ORDER BY author), array_agg(n ORDER BY author) INTO authors, ns
      FROM (SELECT author, sign * count(*)::int AS n FROM (
                SELECT v.user_id AS author FROM changed r
                  JOIN shared_vybes v ON r.reactable_type = 'SHARED_VYBE' AND v.id = r.reactable_id
                UNION ALL
                SELECT c.user_id FROM changed r
                  JOIN comments c ON r.reactable_type = 'COMMENT' AND c.id = r.reactable_id
                UNION ALL
                SELECT l.creator_id FROM changed r
                  JOIN looprooms l ON r.reactable_type = 'LOOPROOM' AND l.id = r.reactable_id
            ) a GROUP BY author) d;
    PERFORM counters_bump_profiles(authors, NULL, ns);
    RETURN NULL;
END $$;

CREATE TRIGGER reactions_counters_ins AFTER INSERT ON reactions
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION reactions_counters();
CREATE TRIGGER reactions_counters_del AFTER DELETE ON reactions
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION reactions_counters();

-- ---------------------------------------------------------------------------
-- Reactions have no FK on reactable_id (see 0001), so deleting a target
-- deletes its reactions here, and takes their count off the target's author
-- (the reactions trigger cannot: the target row is already gone).
-- ---------------------------------------------------------------------------

CREATE FUNCTION reactions_cleanup(p_type reactable_type, p_ids uuid[], p_authors text[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    authors text[];
    ns int[];
BEGIN
    WITH targets AS (SELECT * FROM unnest(p_ids, p_authors) AS t (id, author)),
         gone AS (DELETE FROM reactions r USING targets t
                   WHERE r.reactable_type = p_type AND r.reactable_id = t.id
               RETURNING t.author)
    SELECT array_agg(author ORDER BY author), array_agg(n ORDER BY author) INTO authors, ns
      FROM (SELECT author, -count(*)::int AS n FROM gone GROUP BY author) d;
    PERFORM counters_bump_profiles(authors, NULL, ns);
END $$;

-- ---------------------------------------------------------------------------
-- shared_vybes -> vibes_shared on the author's profile; reaction cleanup.
-- ---------------------------------------------------------------------------

CREATE FUNCTION shared_vybes_counters() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sign int := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
    users_ text[];
    ns int[];
    ids uuid[];
BEGIN
    IF TG_OP = 'DELETE' THEN
        SELECT array_agg(id), array_agg(user_id) INTO ids, users_ FROM changed;
        PERFORM reactions_cleanup('SHARED_VYBE', ids, users_);
    END IF;
    SELECT array_agg(user_id ORDER BY user_id), array_agg(n ORDER BY user_id) INTO users_, ns
      FROM (SELECT user_id, sign * count(*)::int AS n FROM changed GROUP BY 1) d;
    PERFORM counters_bump_profiles(users_, ns, NULL);
    RETURN NULL;
END $$;

CREATE TRIGGER shared_vybes_counters_ins AFTER INSERT ON shared_vybes
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION shared_vybes_counters();
CREATE TRIGGER shared_vybes_counters_del AFTER DELETE ON shared_vybes
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION shared_vybes_counters();

-- ---------------------------------------------------------------------------
-- comments -> comment_count on the vybe; reaction cleanup.
-- ---------------------------------------------------------------------------

CREATE FUNCTION comments_counters() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sign int := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
    ids uuid[];
    ns int[];
    users_ text[];
BEGIN
    IF TG_OP = 'DELETE' THEN
        SELECT array_agg(id), array_agg(user_id) INTO ids, users_ FROM changed;
        PERFORM reactions_cleanup('COMMENT', ids, users_);
    END IF;
    SELECT array_agg(id ORDER BY id), array_agg(n ORDER BY id) INTO ids, ns
      FROM (SELECT shared_vybe_id AS id, sign * count(*)::int AS n FROM changed GROUP BY 1) d;
    PERFORM counters_bump_vybes(ids, NULL, ns, NULL, NULL);
    RETURN NULL;
END $$;

CREATE TRIGGER comments_counters_ins AFTER INSERT ON comments
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION comments_counters();
CREATE TRIGGER comments_counters_del AFTER DELETE ON comments
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION comments_counters();

-- ---------------------------------------------------------------------------
-- looprooms: reaction cleanup only.
-- ---------------------------------------------------------------------------

CREATE FUNCTION looprooms_cleanup() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids uuid[];
    users_ text[];
BEGIN
    SELECT array_agg(id), array_agg(creator_id) INTO ids, users_ FROM changed;
    PERFORM reactions_cleanup('LOOPROOM', ids, users_);
    RETURN NULL;
END $$;

CREATE TRIGGER looprooms_cleanup_del AFTER DELETE ON looprooms
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION looprooms_cleanup();

-- ---------------------------------------------------------------------------
-- shares -> share_count on the vybe.
-- ---------------------------------------------------------------------------

CREATE FUNCTION shares_counters() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sign int := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
    ids uuid[];
    ns int[];
BEGIN
    SELECT array_agg(id ORDER BY id), array_agg(n ORDER BY id) INTO ids, ns
      FROM (SELECT shared_vybe_id AS id, sign * count(*)::int AS n FROM changed GROUP BY 1) d;
    PERFORM counters_bump_vybes(ids, NULL, NULL, ns, NULL);
    RETURN NULL;
END $$;

CREATE TRIGGER shares_counters_ins AFTER INSERT ON shares
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION shares_counters();
CREATE TRIGGER shares_counters_del AFTER DELETE ON shares
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION shares_counters();

-- ---------------------------------------------------------------------------
-- reports -> report_count / is_reported on the vybe, comment or user.
-- ---------------------------------------------------------------------------

CREATE FUNCTION reports_counters() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sign int := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
    ids uuid[];
    texts text[];
    ns int[];
BEGIN
    SELECT array_agg(id ORDER BY id), array_agg(n ORDER BY id) INTO ids, ns
      FROM (SELECT reported_id::uuid AS id, sign * count(*)::int AS n FROM changed
             WHERE reported_type = 'shared_vybe' GROUP BY 1) d;
    PERFORM counters_bump_vybes(ids, NULL, NULL, NULL, ns);

    SELECT array_agg(id ORDER BY id), array_agg(n ORDER BY id) INTO ids, ns
      FROM (SELECT reported_id::uuid AS id, sign * count(*)::int AS n FROM changed
             WHERE reported_type = 'comment' GROUP BY 1) d;
    PERFORM counters_bump_comments(ids, NULL, ns);

    SELECT array_agg(id ORDER BY id), array_agg(n ORDER BY id) INTO texts, ns
      FROM (SELECT reported_id AS id, sign * count(*)::int AS n FROM changed
             WHERE reported_type = 'user' GROUP BY 1) d;
    PERFORM counters_bump_users(texts, ns);
    RETURN NULL;
END $$;

CREATE TRIGGER reports_counters_ins AFTER INSERT ON reports
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION reports_counters();
CREATE TRIGGER reports_counters_del AFTER DELETE ON reports
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION reports_counters();

-- ---------------------------------------------------------------------------
-- Counter keys are immutable (no UPDATE trigger needs to move counts).
-- ---------------------------------------------------------------------------

CREATE FUNCTION counters_refuse_key_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'column(s) % of % are counter keys and cannot be updated; delete and insert instead',
        TG_ARGV[0], TG_TABLE_NAME USING ERRCODE = 'feature_not_supported';
END $$;

CREATE TRIGGER reactions_keys_immutable BEFORE UPDATE OF user_id, reactable_type, reactable_id ON reactions
    FOR EACH ROW WHEN (OLD.user_id IS DISTINCT FROM NEW.user_id OR OLD.reactable_type IS DISTINCT FROM NEW.reactable_type
                       OR OLD.reactable_id IS DISTINCT FROM NEW.reactable_id)
    EXECUTE FUNCTION counters_refuse_key_update('user_id, reactable_type, reactable_id');
CREATE TRIGGER shared_vybes_keys_immutable BEFORE UPDATE OF user_id ON shared_vybes
    FOR EACH ROW WHEN (OLD.user_id IS DISTINCT FROM NEW.user_id)
    EXECUTE FUNCTION counters_refuse_key_update('user_id');
CREATE TRIGGER comments_keys_immutable BEFORE UPDATE OF user_id, shared_vybe_id ON comments
    FOR EACH ROW WHEN (OLD.user_id IS DISTINCT FROM NEW.user_id OR OLD.shared_vybe_id IS DISTINCT FROM NEW.shared_vybe_id)
    EXECUTE FUNCTION counters_refuse_key_update('user_id, shared_vybe_id');
CREATE TRIGGER looprooms_keys_immutable BEFORE UPDATE OF creator_id ON looprooms
    FOR EACH ROW WHEN (OLD.creator_id IS DISTINCT FROM NEW.creator_id)
    EXECUTE FUNCTION counters_refuse_key_update('creator_id');
CREATE TRIGGER shares_keys_immutable BEFORE UPDATE OF shared_vybe_id ON shares
    FOR EACH ROW WHEN (OLD.shared_vybe_id IS DISTINCT FROM NEW.shared_vybe_id)
    EXECUTE FUNCTION counters_refuse_key_update('shared_vybe_id');
CREATE TRIGGER reports_keys_immutable BEFORE UPDATE OF reported_type, reported_id ON reports
    FOR EACH ROW WHEN (OLD.reported_type IS DISTINCT FROM NEW.reported_type OR OLD.reported_id IS DISTINCT FROM NEW.reported_id)
    EXECUTE FUNCTION counters_refuse_key_update('reported_type, reported_id');
