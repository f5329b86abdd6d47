//! The schema of a PostgreSQL log: its tables, created with the schema,
//! and the two functions an append batch is one statement of
//! ([`APPEND_FUNCTION`], [`PLACE_FUNCTION`]), created (or replaced) with
//! it too: derived from this build, no data of their own.

use postgres::Client;
use tenure_events::{ChainHash, ChainHead};

use super::io;
use super::target::PostgresTarget;
use crate::store::StoreError;

/// The schema this build writes.
const SCHEMA_VERSION: &str = "1";

/// The planned path of an append batch, one statement (and so one round
/// trip, its own transaction): the writer has placed the batch after the
/// head it last saw, with positions, versions and links. The function
/// takes the lock, and appends only if the head is still that position
/// (no other node appended since, so what the writer remembers of its
/// streams holds). It creates the streams the writer takes as new (their
/// row ids come back in the order given; events name them by placeholder,
/// -(index + 1)): if one exists after all, the unique name fails the
/// statement, which writes nothing. It inserts the events and notifies. It
/// answers NULL when the head moved; the writer then takes the placing
/// path ([`PLACE_FUNCTION`]), as after a failure on a stream's name.
/// Created (or replaced) with the schema: derived from this build, no
/// data of its own.
pub(super) const APPEND_FUNCTION: &str = "
CREATE OR REPLACE FUNCTION tenure_append_v1(
    p_lock bigint, p_head bigint, p_created text[],
    p_positions bigint[], p_streams bigint[], p_versions bigint[], p_event_ids uuid[], p_types text[],
    p_schema_versions integer[], p_times bigint[], p_accounts text[], p_requests uuid[], p_causes uuid[],
    p_payloads text[], p_hashes bytea[], p_channel text, p_notice text)
RETURNS bigint[] LANGUAGE plpgsql AS $fn$
DECLARE
    head bigint;
    ids bigint[];
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock);
    SELECT COALESCE(MAX(position), 0) INTO head FROM events;
    IF head <> p_head THEN
        RETURN NULL;
    END IF;
    WITH made AS (INSERT INTO streams (name) SELECT UNNEST(p_created) RETURNING id, name)
    SELECT COALESCE(array_agg(made.id ORDER BY given.ord), '{}') INTO ids
        FROM made JOIN UNNEST(p_created) WITH ORDINALITY AS given (name, ord) ON given.name COLLATE \"C\" = made.name;
    INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version, time_us, account,
                        request_id, causation_id, payload, hash)
    SELECT b.position, CASE WHEN b.stream < 0 THEN ids[-b.stream] ELSE b.stream END, b.version, b.event_id,
           b.event_type, b.schema_version, b.time_us, b.account, b.request_id, b.causation_id, b.payload, b.hash
    FROM UNNEST(p_positions, p_streams, p_versions, p_event_ids, p_types, p_schema_versions, p_times,
                p_accounts, p_requests, p_causes, p_payloads, p_hashes)
         AS b (position, stream, version, event_id, event_type, schema_version, time_us, account,
               request_id, causation_id, payload, hash);
    IF cardinality(p_positions) > 0 THEN
        PERFORM pg_notify(p_channel, p_notice);
    END IF;
    RETURN ids;
END
$fn$;";

/// The placing path of an append batch, also one statement: PostgreSQL
/// places the batch after whatever head the log has, under the lock, so
/// the lock is held for the statement and its commit only, however many
/// nodes append (a transaction driven from the writer would hold it over
/// several round trips). For each request in order (`p_names`,
/// `p_expected`: -1 for any version, `p_counts` events each) it looks each
/// of the batch's streams up once, by key (id and version; set-wise in a
/// large batch), skips a
/// request whose expected version does not match, creates (in one insert)
/// the streams that get their first events, and gives each event its position, version and link:
/// `sha256(previous link || canonical bytes)`, the canonical bytes joined
/// from the format byte (1), the position, the stream's canonical string
/// (`p_strings`), the version and the event's canonical body (`p_bodies`),
/// which the writer encodes (`tenure_events::chain`). It inserts, notifies
/// (`LAST/TAG/EVENTS`: the last position, this node's tag, so its listener
/// need not read the batch back, and the events as a JSON array of arrays,
/// [`StoredEvent`](super::rows::StoredEvent), so that other nodes need not read them either; without
/// `/EVENTS` when that would not fit in a notification's 8,000 bytes), and
/// answers the head it placed the batch after, each
/// stream's id (NULL: none) and version before the batch in order of first
/// mention, the created streams' ids in order, and the last link: the
/// writer decides the same batch against that head and those streams
/// (`Plan`) and checks it reaches the same link.
pub(super) const PLACE_FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION tenure_place_v1(
    p_lock bigint, p_names text[], p_strings bytea[], p_expected bigint[], p_counts integer[],
    p_event_ids uuid[], p_types text[], p_schema_versions integer[], p_times bigint[], p_accounts text[],
    p_requests uuid[], p_causes uuid[], p_payloads text[], p_bodies bytea[], p_channel text, p_node text,
    OUT head_position bigint, OUT head_hash bytea, OUT found_ids bigint[], OUT found_versions bigint[],
    OUT created_ids bigint[], OUT last_hash bytea)
LANGUAGE plpgsql AS $fn$
DECLARE
    n integer := cardinality(p_event_ids);
    seen text[] := '{}';
    ks integer[];
    ids bigint[] := '{}';
    versions bigint[] := '{}';
    creating text[] := '{}';
    positions bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    stream_ids bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    event_versions bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    hashes bytea[] := array_fill(NULL::bytea, ARRAY[n]);
    event_streams text[] := array_fill(NULL::text, ARRAY[n]);
    notice text;
    pos bigint;
    link bytea;
    sid bigint;
    v bigint;
    k integer;
    e integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock);
    SELECT ev.position, ev.hash INTO pos, link FROM events ev ORDER BY ev.position DESC LIMIT 1;
    IF pos IS NULL THEN
        pos := 0;
        link := decode(repeat('00', 32), 'hex');
    END IF;
    head_position := pos;
    head_hash := link;
    found_ids := '{}';
    found_versions := '{}';
    created_ids := '{}';
    IF cardinality(p_names) > 32 THEN
        -- A large batch (expiries name thousands of streams): the batch's
        -- streams in order of first mention, each request's index among
        -- them, and each one's id and version, looked up by key in three
        -- statements rather than two per stream below.
        SELECT coalesce(array_agg(d.n ORDER BY d.o), '{}') INTO seen
            FROM (SELECT u.n, min(u.o) AS o FROM unnest(p_names) WITH ORDINALITY AS u (n, o) GROUP BY u.n) AS d;
        SELECT array_agg(d.k ORDER BY u.o) INTO ks
            FROM unnest(p_names) WITH ORDINALITY AS u (n, o)
            JOIN unnest(seen) WITH ORDINALITY AS d (n, k) ON d.n = u.n;
        SELECT coalesce(array_agg(f.id ORDER BY f.k), '{}'),
               coalesce(array_agg(coalesce((SELECT max(ev.version) FROM events ev WHERE ev.stream_id = f.id), 0)
                                  ORDER BY f.k), '{}')
            INTO ids, versions
            FROM (SELECT d.k, (SELECT s.id FROM streams s WHERE s.name = d.n) AS id
                  FROM unnest(seen) WITH ORDINALITY AS d (n, k)) AS f;
        found_ids := ids;
        found_versions := versions;
    END IF;
    FOR r IN 1 .. coalesce(cardinality(p_names), 0) LOOP
        IF ks IS NOT NULL THEN
            k := ks[r];
        ELSE
            k := array_position(seen, p_names[r]);
            IF k IS NULL THEN
                SELECT s.id INTO sid FROM streams s WHERE s.name = p_names[r];
                v := 0;
                IF sid IS NOT NULL THEN
                    SELECT coalesce(max(ev.version), 0) INTO v FROM events ev WHERE ev.stream_id = sid;
                END IF;
                seen := array_append(seen, p_names[r]);
                ids := array_append(ids, sid);
                versions := array_append(versions, v);
                found_ids := array_append(found_ids, sid);
                found_versions := array_append(found_versions, v);
                k := cardinality(seen);
            END IF;
        END IF;
        v := versions[k];
        IF p_expected[r] >= 0 AND p_expected[r] <> v THEN
            e := e + p_counts[r];
            CONTINUE;
        END IF;
        IF p_counts[r] = 0 THEN
            CONTINUE;
        END IF;
        sid := ids[k];
        IF sid IS NULL THEN
            -- Created below, with the others: -(its index among them) until then.
            creating := array_append(creating, p_names[r]);
            sid := -cardinality(creating);
            ids[k] := sid;
        END IF;
        FOR j IN 1 .. p_counts[r] LOOP
            e := e + 1;
            pos := pos + 1;
            v := v + 1;
            link := sha256(link || '\x01'::bytea || int8send(pos) || p_strings[r] || int8send(v) || p_bodies[e]);
            positions[e] := pos;
            stream_ids[e] := sid;
            event_versions[e] := v;
            hashes[e] := link;
            event_streams[e] := p_names[r];
        END LOOP;
        versions[k] := v;
    END LOOP;
    IF cardinality(creating) > 0 THEN
        WITH made AS (INSERT INTO streams (name) SELECT unnest(creating) RETURNING id, name)
        SELECT array_agg(made.id ORDER BY given.ord) INTO created_ids
            FROM made JOIN unnest(creating) WITH ORDINALITY AS given (name, ord) ON given.name COLLATE "C" = made.name;
    END IF;
    IF pos > head_position THEN
        INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version, time_us, account,
                            request_id, causation_id, payload, hash)
        SELECT b.position, CASE WHEN b.stream_id < 0 THEN created_ids[-b.stream_id] ELSE b.stream_id END,
               b.version, b.event_id, b.event_type, b.schema_version, b.time_us, b.account, b.request_id,
               b.causation_id, b.payload, b.hash
        FROM UNNEST(positions, stream_ids, event_versions, p_event_ids, p_types, p_schema_versions, p_times,
                    p_accounts, p_requests, p_causes, p_payloads, hashes)
             AS b (position, stream_id, version, event_id, event_type, schema_version, time_us, account,
                   request_id, causation_id, payload, hash)
        WHERE b.position IS NOT NULL;
        notice := pos::text || '/' || p_node;
        -- An event takes over 200 bytes in the notice: more than 40 never fit.
        IF pos - head_position <= 40 THEN
            SELECT notice || '/' || json_agg(json_build_array(b.position, b.stream, b.version, b.event_id,
                       b.event_type, b.schema_version, b.time_us, b.account, b.request_id, b.causation_id,
                       b.payload, encode(b.hash, 'hex')) ORDER BY b.position)::text
                INTO notice
                FROM UNNEST(positions, event_streams, event_versions, p_event_ids, p_types, p_schema_versions,
                            p_times, p_accounts, p_requests, p_causes, p_payloads, hashes)
                     AS b (position, stream, version, event_id, event_type, schema_version, time_us, account,
                           request_id, causation_id, payload, hash)
                WHERE b.position IS NOT NULL;
            IF octet_length(notice) >= 8000 THEN
                notice := pos::text || '/' || p_node;
            END IF;
        END IF;
        PERFORM pg_notify(p_channel, notice);
    END IF;
    last_hash := link;
END
$fn$;"#;

/// Calls [`PLACE_FUNCTION`].
pub(super) const PLACE: &str = "SELECT head_position, head_hash, found_ids, found_versions, created_ids, last_hash \
                     FROM tenure_place_v1($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)";

/// Calls [`APPEND_FUNCTION`].
pub(super) const APPEND: &str =
    "SELECT tenure_append_v1($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";

/// Creates the schema and its tables if needed and answers the log's head.
pub(super) fn prepare(client: &mut Client, target: &PostgresTarget) -> Result<ChainHead, StoreError> {
    let schema = target.schema();
    // Several nodes may start at once: one creates, the others wait.
    let mut tx = client.transaction().map_err(io)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&target.lock_key()])
        .map_err(io)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
         SET LOCAL search_path TO \"{schema}\";
         CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS streams (
             id   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             name TEXT COLLATE \"C\" NOT NULL UNIQUE
         );
         CREATE TABLE IF NOT EXISTS events (
             position       BIGINT  PRIMARY KEY,
             stream_id      BIGINT  NOT NULL REFERENCES streams (id),
             version        BIGINT  NOT NULL,
             event_id       UUID    NOT NULL,
             event_type     TEXT    NOT NULL,
             schema_version INTEGER NOT NULL,
             time_us        BIGINT  NOT NULL,
             account        TEXT    NOT NULL,
             request_id     UUID,
             causation_id   UUID,
             payload        TEXT    NOT NULL,
             hash           BYTEA   NOT NULL,
             UNIQUE (stream_id, version)
         );
         CREATE TABLE IF NOT EXISTS timers_leader (
             id    INTEGER PRIMARY KEY CHECK (id = 1),
             url   TEXT NOT NULL,
             since TIMESTAMPTZ NOT NULL
         );
         CREATE INDEX IF NOT EXISTS events_by_causation ON events (causation_id) WHERE causation_id IS NOT NULL;
         INSERT INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}') ON CONFLICT DO NOTHING;
         {APPEND_FUNCTION}
         {PLACE_FUNCTION}"
    ))
    .map_err(io)?;
    let version: String = tx
        .query_one("SELECT value FROM meta WHERE key = 'schema_version'", &[])
        .and_then(|r| r.try_get(0))
        .map_err(io)?;
    if version != SCHEMA_VERSION {
        return Err(StoreError::Io(format!(
            "schema {schema} holds a log of schema version {version}; this build reads {SCHEMA_VERSION}"
        )));
    }
    tx.commit().map_err(io)?;
    head(client)
}

const HEAD: &str = "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1";

/// The last event's position and link (or the empty head).
pub(super) fn head<C: postgres::GenericClient>(client: &mut C) -> Result<ChainHead, StoreError> {
    head_of(client.query_opt(HEAD, &[]).map_err(io)?)
}

/// The head from the row of [`HEAD`].
fn head_of(row: Option<postgres::Row>) -> Result<ChainHead, StoreError> {
    let Some(row) = row else {
        return Ok(ChainHead::EMPTY);
    };
    let position: i64 = row.try_get(0).map_err(io)?;
    let hash: &[u8] = row.try_get(1).map_err(io)?;
    Ok(ChainHead {
        position: u64::try_from(position).map_err(|e| StoreError::Corrupt(format!("head position: {e}")))?,
        hash: ChainHash::try_from(hash)
            .map_err(|len| StoreError::Corrupt(format!("position {position}: hash of {len} bytes")))?,
    })
}
