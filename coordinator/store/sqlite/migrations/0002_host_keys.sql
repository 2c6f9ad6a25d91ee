-- Host keys pinned on first use under the accept-new policy, one per
-- host:port, never replaced: a different key later is a conflict.
CREATE TABLE host_keys (
    hostport  TEXT PRIMARY KEY,
    key       TEXT NOT NULL,
    pinned_at INTEGER NOT NULL
);
