-- Facts about the store itself, one row each: cluster_id is a random id
-- made the first time a coordinator asks, the same for every coordinator
-- that shares the store. Shims keep what they leave on a host under it,
-- so that two mito installations driving one host never take each
-- other's leftovers for their own.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
