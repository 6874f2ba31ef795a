-- 0011: the database itself holds a live care claim against a close by anyone else. The gateway checks the claim
-- before it closes (db/learning.py), but a gateway of the release before 0010 knows nothing of claims: during a
-- rolling update it would close a case another moderator is reaching out on. Now such a close fails (SQLSTATE
-- VY409, "care case claimed"), whichever release asks; the release before answers it as an error, and nothing is
-- closed. The lapse is judged by the database's clock, as the gateway judges it. Adds only.
CREATE FUNCTION care_claim_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state = 'open' AND NEW.state = 'closed' AND OLD.claimed_by IS NOT NULL
       AND OLD.claim_expires_at > now() AND NEW.closed_by IS DISTINCT FROM OLD.claimed_by THEN
        RAISE EXCEPTION 'care case % is claimed by % until %', OLD.id, OLD.claimed_by, OLD.claim_expires_at
            USING ERRCODE = 'VY409';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER care_cases_claim_guard BEFORE UPDATE OF state ON care_cases
    FOR EACH ROW EXECUTE FUNCTION care_claim_guard();
