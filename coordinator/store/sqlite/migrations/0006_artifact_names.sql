-- store.GetArtifact of the latest attempt that has a name (every download
-- that names no attempt) probes this index. The primary key, ordered by
-- attempt before name, would serve it only by scanning every artifact of
-- the task's later attempts, once per lookup.
CREATE INDEX task_artifacts_name ON task_artifacts (task_id, name, attempt);
