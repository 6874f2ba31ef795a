-- 0010: a care case a moderator is reaching out on is claimed, as an abuse case is, so that two moderators do not
-- both contact a member in distress; the claim lapses on its own after the lease. Adds only: the release before
-- reads care rows by column name and never sees these.
ALTER TABLE care_cases ADD COLUMN claimed_by text, ADD COLUMN claim_expires_at timestamptz;
