-- 0006: appeals, and the moderator's message to the author apart from the internal note (issue 14).

-- One appeal per case, by the content's author, against a hide or remove (a moderator's or the
-- model's). The appeal reopens the case; a moderator other than the one who acted decides it.
ALTER TABLE moderation_cases
    ADD COLUMN appeal_statement text CHECK (char_length(appeal_statement) <= 1000),
    ADD COLUMN appealed_at      timestamptz,
    -- The moderator whose action is appealed (NULL: the model hid it): they may not decide it.
    ADD COLUMN appeal_of        text,
    ADD COLUMN appeal_outcome   text CHECK (appeal_outcome IN ('granted', 'denied')),
    -- What the moderator chose to tell the author (the note stays internal: the audit log).
    ADD COLUMN message          text CHECK (char_length(message) <= 2000);
CREATE INDEX moderation_cases_appeals_idx ON moderation_cases (appealed_at)
    WHERE state = 'open' AND appeal_statement IS NOT NULL;
