-- Storage quotas and group attachments. A group's usage is what its
-- attachments and its tasks' artifacts take in the artifact store
-- together; each upload charges it in the transaction that records it.
ALTER TABLE user_groups
    ADD COLUMN quota_bytes bigint NOT NULL DEFAULT 0 CHECK (quota_bytes >= 0),
    ADD COLUMN used_bytes bigint NOT NULL DEFAULT 0;

-- Artifacts recorded before usage was kept count from the start.
UPDATE user_groups g SET used_bytes = u.total
FROM (SELECT t.group_name, sum(a.size) AS total
      FROM task_artifacts a JOIN tasks t ON t.id = a.task_id
      GROUP BY t.group_name) u
WHERE u.group_name = g.name;

-- Keys collate "C" (bytewise), as SQLite's do, so that both stores list
-- them in the same order and a prefix LIKE can use the primary key. object
-- is the artifact store key of the bytes.
CREATE TABLE group_attachments (
    group_name text NOT NULL REFERENCES user_groups (name) ON DELETE CASCADE,
    key        text COLLATE "C" NOT NULL,
    object     text NOT NULL,
    size       bigint NOT NULL CHECK (size >= 0),
    sha256     text NOT NULL,
    creator    text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (group_name, key)
);

-- Task inputs (tasks.Spec.Inputs), a JSON array; 'null' for none, as for
-- command and env.
ALTER TABLE tasks ADD COLUMN inputs jsonb NOT NULL DEFAULT 'null';

-- The source tasks of a task's task inputs, each once (store.WaitsOn): the
-- claim skips a queued task while any of them is queued or running, so
-- that a pipeline submitted at once runs in order. Empty for most tasks.
-- The claim finds the queued tasks that have sources through the partial
-- index, which holds none of the others: a queue without pipelines pays
-- one look at an empty index.
ALTER TABLE tasks ADD COLUMN waits_on bigint[] NOT NULL DEFAULT '{}';
CREATE INDEX tasks_waiting ON tasks (group_name) WHERE state = 'queued' AND waits_on <> '{}';
