-- Conversation scheduler (issue 7): what 001's ERD tables need for a restart to
-- neither repeat nor lose a reminder, for series to keep extending their
-- horizon, and the place of a recorder participant (issue 8).

-- Set in the same transaction as the timeslot.reminder outbox event.
ALTER TABLE timeslots ADD COLUMN reminded_at timestamptz;
CREATE INDEX timeslots_unreminded ON timeslots (start_time)
    WHERE is_active AND reminded_at IS NULL;

-- A recorder joins the mesh but counts toward neither occupancy nor the cap.
ALTER TABLE participants ADD COLUMN is_recorder boolean NOT NULL DEFAULT false;

-- A recurring slot request: its rule, read in its zone from a local DTSTART,
-- expanded into timeslots up to expanded_until and extended by the scheduler.
CREATE TABLE timeslot_series (
    id                    uuid PRIMARY KEY,
    rrule                 text NOT NULL,
    timezone              text NOT NULL,
    local_start           text NOT NULL,
    target_language_code  text NOT NULL,
    level                 text NOT NULL,
    duration_minutes      integer NOT NULL,
    min_participants      integer NOT NULL,
    max_participants      integer NOT NULL,
    created_by            text,
    expanded_until        timestamptz NOT NULL,
    finished              boolean NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX timeslot_series_open ON timeslot_series (expanded_until) WHERE NOT finished;
