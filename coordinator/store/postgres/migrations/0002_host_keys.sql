-- Host keys pinned on first use under the accept-new policy, one per
-- host:port, never replaced: a different key later is a conflict.
CREATE TABLE host_keys (
    hostport  text PRIMARY KEY,
    key       text NOT NULL,
    pinned_at timestamptz NOT NULL DEFAULT now()
);
