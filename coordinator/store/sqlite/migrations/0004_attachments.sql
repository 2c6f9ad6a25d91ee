-- Storage quotas and group attachments. A group's usage is what its
-- attachments and its tasks' artifacts take in the artifact store
-- together; each upload charges it in the transaction that records it.
ALTER TABLE user_groups ADD COLUMN quota_bytes INTEGER NOT NULL DEFAULT 0 CHECK (quota_bytes >= 0);
ALTER TABLE user_groups ADD COLUMN used_bytes INTEGER NOT NULL DEFAULT 0;

-- Artifacts recorded before usage was kept count from the start.
UPDATE user_groups SET used_bytes = (
    SELECT coalesce(sum(a.size), 0)
    FROM task_artifacts a JOIN tasks t ON t.id = a.task_id
    WHERE t.group_name = user_groups.name);

-- Keys compare bytewise (BINARY), so a prefix listing is a range of the
-- primary key. object is the artifact store key of the bytes.
CREATE TABLE group_attachments (
    group_name TEXT NOT NULL REFERENCES user_groups (name) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    object     TEXT NOT NULL,
    size       INTEGER NOT NULL CHECK (size >= 0),
    sha256     TEXT NOT NULL,
    creator    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (group_name, key)
);

-- Task inputs (tasks.Spec.Inputs), a JSON array; 'null' for none, as for
-- command and env.
ALTER TABLE tasks ADD COLUMN inputs TEXT NOT NULL DEFAULT 'null';

-- The source tasks of a task's task inputs, each once (store.WaitsOn), a
-- JSON array of IDs: the claim skips a queued task while any of them is
-- queued or running, so that a pipeline submitted at once runs in order.
-- '[]' for most tasks, which the claim then checks no further.
ALTER TABLE tasks ADD COLUMN waits_on TEXT NOT NULL DEFAULT '[]';
