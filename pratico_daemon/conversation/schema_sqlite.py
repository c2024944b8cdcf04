"""The embedded store's conversation schema (SQLite dialect of migrations 001 + 007)."""

SCHEMA = """\
-- The conversation tables for the embedded store: the same shape as
-- storage/migrations 001 (timeslots … outbox) + 007, in SQLite's dialect.
-- Instants are ISO 8601 UTC text of fixed width (they sort as instants).
CREATE TABLE IF NOT EXISTS timeslot_series (
    id TEXT PRIMARY KEY, rrule TEXT NOT NULL, timezone TEXT NOT NULL,
    local_start TEXT NOT NULL, target_language_code TEXT NOT NULL, level TEXT NOT NULL,
    duration_minutes INTEGER NOT NULL, min_participants INTEGER NOT NULL,
    max_participants INTEGER NOT NULL, created_by TEXT, expanded_until TEXT NOT NULL,
    finished INTEGER NOT NULL DEFAULT 0, created_at TEXT
);
CREATE TABLE IF NOT EXISTS timeslots (
    id TEXT PRIMARY KEY, series_id TEXT, target_language_code TEXT NOT NULL,
    level TEXT NOT NULL, start_time TEXT NOT NULL,
    duration_minutes INTEGER NOT NULL CHECK (duration_minutes > 0),
    min_participants INTEGER NOT NULL, max_participants INTEGER NOT NULL,
    recurrence TEXT, timezone TEXT NOT NULL DEFAULT 'UTC',
    is_active INTEGER NOT NULL DEFAULT 1, created_by TEXT, created_at TEXT,
    reminded_at TEXT,
    CHECK (2 <= min_participants AND min_participants <= max_participants)
);
CREATE INDEX IF NOT EXISTS timeslots_start ON timeslots (start_time);
CREATE TABLE IF NOT EXISTS registrations (
    id TEXT PRIMARY KEY,
    timeslot_id TEXT NOT NULL REFERENCES timeslots (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'registered',
    registered_at TEXT NOT NULL, cancelled_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS registrations_active ON registrations (timeslot_id, user_id)
    WHERE status = 'registered';
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    timeslot_id TEXT NOT NULL UNIQUE REFERENCES timeslots (id) ON DELETE CASCADE,
    target_language_code TEXT NOT NULL, level TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'waiting', end_reason TEXT,
    started_at TEXT, ended_at TEXT, recording_enabled INTEGER NOT NULL DEFAULT 0,
    recording_url TEXT, created_at TEXT
);
CREATE TABLE IF NOT EXISTS participants (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'joined',
    camera_enabled INTEGER NOT NULL DEFAULT 1, mic_enabled INTEGER NOT NULL DEFAULT 1,
    recording_consent INTEGER NOT NULL DEFAULT 0, joined_at TEXT NOT NULL, left_at TEXT,
    is_recorder INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS participants_once ON participants (session_id, user_id);
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY, topic TEXT NOT NULL, type TEXT NOT NULL,
    payload TEXT NOT NULL DEFAULT '{}', occurred_at TEXT NOT NULL, published_at TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (occurred_at, id) WHERE published_at IS NULL;
-- The embedded bus: one table of streams, consumer offsets per group.
CREATE TABLE IF NOT EXISTS bus_entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL, occurred_at TEXT NOT NULL, payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bus_offsets (
    stream TEXT NOT NULL, group_name TEXT NOT NULL, last_seq INTEGER NOT NULL,
    PRIMARY KEY (stream, group_name)
);
"""
