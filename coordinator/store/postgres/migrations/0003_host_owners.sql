-- Which coordinator drives each inventory host, when several share the
-- database: a lease renewed by its holder and taken over by another
-- coordinator once it expires. Kept apart from hosts so that PutHost, which
-- replaces a host's record whole, never touches it, and so that a lease
-- can be taken before the host has a record.
CREATE TABLE host_owners (
    name    text PRIMARY KEY,
    owner   text NOT NULL,
    expires timestamptz NOT NULL
);
