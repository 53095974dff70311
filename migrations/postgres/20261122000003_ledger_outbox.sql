-- The ledger outbox: how far the revocation ledger has been published to
-- `prov.ledger.revocations`. One row; the publisher advances it after JetStream has stored
-- every row up to `published_seq_no`, so a crash between commit and publish only delays an
-- event (it is published again, and JetStream drops the copy by its `Nats-Msg-Id`).
CREATE TABLE provcache.prov_ledger_outbox (
    id                SMALLINT PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    published_seq_no  BIGINT      NOT NULL DEFAULT 0 CHECK (published_seq_no >= 0),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO provcache.prov_ledger_outbox (id, published_seq_no) VALUES (1, 0);

