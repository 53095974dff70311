-- The in-process event bus of embedded mode (src/adapters/local_bus.rs): JetStream's
-- streams, durable consumers and their unacknowledged deliveries, in the same file as the
-- rest of provd's data. Times are INTEGER microseconds since the Unix epoch.

-- One row per stream, created from events::streams under the deployment's prefix.
-- last_seq is the sequence of the newest message ever stored (it never goes back, even when
-- messages are removed); msgs and bytes are what the stream holds now, kept as running
-- totals so the size limit is checked without summing the table.
CREATE TABLE bus_streams (
    name TEXT PRIMARY KEY NOT NULL,
    subjects TEXT NOT NULL,
    retention TEXT NOT NULL CHECK (retention IN ('limits', 'workqueue')),
    max_age_us INTEGER NOT NULL,
    max_bytes INTEGER NOT NULL,
    duplicate_window_us INTEGER NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    msgs INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- The messages a stream holds, by stream sequence.
CREATE TABLE bus_messages (
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    subject TEXT NOT NULL,
    msg_id TEXT,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    published_at INTEGER NOT NULL,
    PRIMARY KEY (stream, seq)
) WITHOUT ROWID;

-- Age pruning and StartPosition::Since look messages up by time.
CREATE INDEX bus_messages_published ON bus_messages (stream, published_at);

-- Message ids seen within the duplicate window. Kept apart from the messages so a
-- work-queue message that was acknowledged (and removed) still deduplicates a retry.
CREATE TABLE bus_dedupe (
    stream TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    published_at INTEGER NOT NULL,
    PRIMARY KEY (stream, msg_id)
) WITHOUT ROWID;

CREATE INDEX bus_dedupe_published ON bus_dedupe (stream, published_at);

-- Durable consumers. cursor is the stream sequence up to which messages have been
-- considered for delivery (delivered or skipped by the filter).
CREATE TABLE bus_consumers (
    stream TEXT NOT NULL,
    durable TEXT NOT NULL,
    filter_subject TEXT NOT NULL,
    ack_wait_us INTEGER NOT NULL,
    max_deliver INTEGER NOT NULL,
    max_ack_pending INTEGER NOT NULL,
    cursor INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (stream, durable)
) WITHOUT ROWID;

-- Delivered but not yet acknowledged messages of a consumer: how often each was delivered
-- and when it is due for redelivery (ack wait expired, or the delay of a nak elapsed).
CREATE TABLE bus_pending (
    stream TEXT NOT NULL,
    durable TEXT NOT NULL,
    seq INTEGER NOT NULL,
    deliveries INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    PRIMARY KEY (stream, durable, seq)
) WITHOUT ROWID;

CREATE INDEX bus_pending_due ON bus_pending (stream, durable, due_at);
