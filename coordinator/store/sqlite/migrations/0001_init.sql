-- Times are INTEGER microseconds since the Unix epoch, UTC: exact to the
-- microsecond (as PostgreSQL's timestamptz) and compared as numbers.
-- Lists (command, tags, labels, groups) and env are JSON text.

CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    admin         INTEGER NOT NULL DEFAULT 0,
    disabled      INTEGER NOT NULL DEFAULT 0,
    password_hash TEXT NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL
);

-- "groups" is an SQL keyword; user_groups avoids quoting it everywhere.
CREATE TABLE user_groups (
    name       TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
);

CREATE TABLE group_members (
    group_name TEXT NOT NULL REFERENCES user_groups (name) ON DELETE CASCADE,
    user_name  TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    role       INTEGER NOT NULL,
    PRIMARY KEY (group_name, user_name)
);
CREATE INDEX group_members_user ON group_members (user_name);

CREATE TABLE tokens (
    hash       TEXT PRIMARY KEY,
    user_name  TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires    INTEGER
);
CREATE INDEX tokens_user ON tokens (user_name);

-- group_name and creator carry no foreign key: tasks are history and must
-- outlive any later change to users and groups.
CREATE TABLE tasks (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    group_name       TEXT NOT NULL,
    creator          TEXT NOT NULL,
    command          TEXT NOT NULL DEFAULT 'null',
    shell            TEXT NOT NULL DEFAULT '',
    env              TEXT NOT NULL DEFAULT 'null',
    timeout_ns       INTEGER NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    tags             TEXT NOT NULL DEFAULT '[]',
    labels           TEXT NOT NULL DEFAULT '[]',
    max_attempts     INTEGER NOT NULL,
    state            TEXT NOT NULL
                     CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled')),
    attempt          INTEGER NOT NULL DEFAULT 0,
    host             TEXT NOT NULL DEFAULT '',
    retry_of         INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    lease_token      TEXT,
    lease_expires    INTEGER,
    exit_code        INTEGER,
    signal           TEXT NOT NULL DEFAULT '',
    error            TEXT NOT NULL DEFAULT '',
    stdout_truncated INTEGER NOT NULL DEFAULT 0,
    stderr_truncated INTEGER NOT NULL DEFAULT 0
);
-- The claim walks the queue best first.
CREATE INDEX tasks_queue ON tasks (priority DESC, id) WHERE state = 'queued';
-- The lease rescuer and the hosts' running counts look at running tasks only.
CREATE INDEX tasks_running ON tasks (lease_expires) WHERE state = 'running';
CREATE INDEX tasks_running_host ON tasks (host) WHERE state = 'running';
-- Listings are per group, newest first.
CREATE INDEX tasks_group ON tasks (group_name, id);

CREATE TABLE task_logs (
    task_id INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    stream  TEXT NOT NULL,
    off     INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (task_id, attempt, stream, off)
);

CREATE TABLE task_artifacts (
    task_id    INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt    INTEGER NOT NULL,
    name       TEXT NOT NULL,
    size       INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (task_id, attempt, name)
);

CREATE TABLE hosts (
    name       TEXT PRIMARY KEY,
    transport  TEXT NOT NULL,
    tags       TEXT NOT NULL DEFAULT '[]',
    group_names TEXT NOT NULL DEFAULT '[]',
    slots      INTEGER NOT NULL,
    state      TEXT NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    os         TEXT NOT NULL DEFAULT '',
    arch       TEXT NOT NULL DEFAULT '',
    updated_at INTEGER NOT NULL
);
