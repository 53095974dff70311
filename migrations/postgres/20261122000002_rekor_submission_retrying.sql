-- A submission waiting for its next attempt after a transient failure is `retrying`, so the
-- API can tell it apart from one that was never tried.
ALTER TABLE rekor_submissions DROP CONSTRAINT rekor_submissions_status_check;
ALTER TABLE rekor_submissions ADD CONSTRAINT rekor_submissions_status_check
    CHECK (status IN ('queued', 'submitting', 'retrying', 'logged', 'dead_lettered'));
