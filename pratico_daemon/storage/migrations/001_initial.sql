-- pratico-daemon schema, version 1: every table of PROTOCOL.md.
-- Ids that the daemon generates are uuid (UUIDv7, time-ordered); ids that other
-- backends own (lessons, orgs, users, capsules) are text, as those backends write them.

-- Classroom (seed documents 001 and 002) ------------------------------------
CREATE TABLE lessons (
    id          text PRIMARY KEY,
    org_id      text NOT NULL,
    teacher_id  text NOT NULL,
    title       text NOT NULL DEFAULT '',
    seat_count  integer NOT NULL DEFAULT 0 CHECK (seat_count >= 0),
    status      text NOT NULL DEFAULT 'scheduled'
                CHECK (status IN ('scheduled', 'live', 'ended')),
    started_at  timestamptz,
    ended_at    timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- "the teacher's live lesson" on presence expiry; REST lists by org.
CREATE INDEX lessons_teacher_live ON lessons (org_id, teacher_id) WHERE status <> 'ended';

CREATE TABLE student_attend (
    lesson_id     text NOT NULL REFERENCES lessons (id) ON DELETE CASCADE,
    student_id    text NOT NULL,
    seat          integer NOT NULL CHECK (seat > 0),
    display_name  text NOT NULL DEFAULT '',
    PRIMARY KEY (lesson_id, student_id),
    UNIQUE (lesson_id, seat)
);

-- Quizzes and tasks of a lesson: closing "the lesson's open ones" is one
-- UPDATE ... WHERE lesson_id = $1 AND status = 'open' (partial indexes below).
CREATE TABLE quizzes (
    id          text PRIMARY KEY,
    lesson_id   text NOT NULL REFERENCES lessons (id) ON DELETE CASCADE,
    title       text NOT NULL DEFAULT '',
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    closed_at   timestamptz
);
CREATE INDEX quizzes_open ON quizzes (lesson_id) WHERE status = 'open';

CREATE TABLE tasks (
    id          text PRIMARY KEY,
    lesson_id   text NOT NULL REFERENCES lessons (id) ON DELETE CASCADE,
    title       text NOT NULL DEFAULT '',
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    closed_at   timestamptz
);
CREATE INDEX tasks_open ON tasks (lesson_id) WHERE status = 'open';

-- Pratico live rooms (seed document 000) ------------------------------------
-- A row exists only while the room is live (it is deleted when the session
-- ends), so a plain UNIQUE on name is "unique among live rooms".
CREATE TABLE rooms (
    id                uuid PRIMARY KEY,
    name              text NOT NULL UNIQUE,
    created_at        timestamptz NOT NULL DEFAULT now(),
    created_by        text NOT NULL,
    org_id            text,
    capsule_id        text,
    capsule_snapshot  jsonb,
    quiz_id           text,
    quiz_scores       jsonb NOT NULL DEFAULT '{}'::jsonb,
    params            jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE TABLE chats (
    id          uuid PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    room_id     uuid NOT NULL REFERENCES rooms (id) ON DELETE CASCADE
);
CREATE INDEX chats_room ON chats (room_id);

CREATE TABLE chat_messages (
    id              uuid PRIMARY KEY,
    chat_id         uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    room_id         uuid NOT NULL,
    participant_id  text NOT NULL,
    display_name    text NOT NULL DEFAULT '',
    text            text NOT NULL,
    ts              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_messages_room ON chat_messages (room_id, ts, id);

-- Survives its room: the report reads it after the room is gone (no FK).
CREATE TABLE room_events (
    id          uuid PRIMARY KEY,
    created_at  timestamptz NOT NULL,
    room_id     text NOT NULL,
    user_id     text,
    type        text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX room_events_room_time ON room_events (room_id, created_at, id);

-- Conversation (seed document 003, its ERD) ---------------------------------
CREATE TABLE timeslots (
    id                    uuid PRIMARY KEY,
    series_id             uuid,
    target_language_code  text NOT NULL,
    level                 text NOT NULL,
    start_time            timestamptz NOT NULL,
    duration_minutes      integer NOT NULL CHECK (duration_minutes > 0),
    min_participants      integer NOT NULL,
    max_participants      integer NOT NULL,
    recurrence            text,
    timezone              text NOT NULL DEFAULT 'UTC',
    is_active             boolean NOT NULL DEFAULT true,
    created_by            text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    CHECK (2 <= min_participants AND min_participants <= max_participants)
);
CREATE INDEX timeslots_upcoming ON timeslots (lower(target_language_code), level, start_time)
    WHERE is_active;
CREATE INDEX timeslots_start ON timeslots (start_time) WHERE is_active;
CREATE INDEX timeslots_series ON timeslots (series_id, start_time) WHERE series_id IS NOT NULL;

CREATE TABLE registrations (
    id             uuid PRIMARY KEY,
    timeslot_id    uuid NOT NULL REFERENCES timeslots (id) ON DELETE CASCADE,
    user_id        text NOT NULL,
    status         text NOT NULL DEFAULT 'registered'
                   CHECK (status IN ('registered', 'cancelled')),
    registered_at  timestamptz NOT NULL DEFAULT now(),
    cancelled_at   timestamptz
);
-- One active registration per (slot, user); cancelled ones stay as history.
CREATE UNIQUE INDEX registrations_active ON registrations (timeslot_id, user_id)
    WHERE status = 'registered';
CREATE INDEX registrations_user ON registrations (user_id) WHERE status = 'registered';

CREATE TABLE sessions (
    id                    uuid PRIMARY KEY,
    timeslot_id           uuid NOT NULL UNIQUE REFERENCES timeslots (id) ON DELETE CASCADE,
    target_language_code  text NOT NULL,
    level                 text NOT NULL,
    status                text NOT NULL DEFAULT 'waiting'
                          CHECK (status IN ('waiting', 'active', 'ended')),
    end_reason            text,
    started_at            timestamptz,
    ended_at              timestamptz,
    recording_enabled     boolean NOT NULL DEFAULT false,
    recording_url         text,
    created_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_live ON sessions (status) WHERE status <> 'ended';

CREATE TABLE participants (
    id                 uuid PRIMARY KEY,
    session_id         uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id            text NOT NULL,
    status             text NOT NULL DEFAULT 'joined' CHECK (status IN ('joined', 'left')),
    camera_enabled     boolean NOT NULL DEFAULT true,
    mic_enabled        boolean NOT NULL DEFAULT true,
    recording_consent  boolean NOT NULL DEFAULT false,
    joined_at          timestamptz NOT NULL DEFAULT now(),
    left_at            timestamptz
);
CREATE UNIQUE INDEX participants_once ON participants (session_id, user_id);
CREATE INDEX participants_user_live ON participants (user_id) WHERE status = 'joined';

-- Transactional outbox for domain events (issue 7): written in the same
-- transaction as the change it reports, published to the bus afterwards.
CREATE TABLE outbox (
    id            uuid PRIMARY KEY,
    topic         text NOT NULL,
    type          text NOT NULL,
    payload       jsonb NOT NULL DEFAULT '{}'::jsonb,
    occurred_at   timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_pending ON outbox (occurred_at, id) WHERE published_at IS NULL;
