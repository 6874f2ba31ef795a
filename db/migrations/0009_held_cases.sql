-- 0009: a case whose content has never been shown. Under premoderation a vybe is held until its first score; one
-- the model hides at that score, or a moderator hides or removes before it, was never delivered to anyone. Its
-- viewers hear `vybe.created`, not `vybe.restored`, when a moderator lets it out, and a reopen leaves it out of
-- view (a reopen puts shown content back in view, as before the decision).
ALTER TABLE moderation_cases ADD COLUMN held boolean NOT NULL DEFAULT false;
-- Existing cases stay `false`: whether premoderation was on when their content was first scored is not recorded.
