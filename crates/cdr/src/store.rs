//! The durable CDR store: SQLite in WAL mode, plus an append-only JSON-lines export.
//!
//! Durability rules:
//! - A live call has a row in `live_calls`, written when the call is offered and updated at
//!   each milestone. If whatsip dies, the row survives; [`CdrStore::recover_interrupted`] turns
//!   it into a final record with outcome `interrupted` at the next start.
//! - When a call ends, its final record is inserted into `cdrs` and its live row deleted in
//!   **one transaction**, committed with `synchronous = FULL` before the caller releases the
//!   call's resources. A crash after that commit loses nothing.
//! - The JSON-lines export is written after the commit and each exported row is marked. Rows a
//!   crash left unexported are exported when the store is opened again, so the export is
//!   at-least-once and never misses a record.
//!
//! The store is blocking (SQLite); drivers call it from a dedicated thread or
//! `spawn_blocking`, never from a core.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::CdrError;
use crate::record::{CallRecord, Direction, Ending, HangupSide, Outcome, UnixMillis};

/// Schema migrations, applied in order; `PRAGMA user_version` holds how many ran.
/// Never edit an entry once released: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: final records and live calls.
    "CREATE TABLE cdrs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        wa_call_id TEXT NOT NULL UNIQUE,
        direction TEXT NOT NULL,
        business_number TEXT NOT NULL,
        customer_number TEXT NOT NULL,
        offer_at INTEGER NOT NULL,
        end_at INTEGER,
        outcome TEXT NOT NULL,
        record TEXT NOT NULL,
        exported INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX cdrs_offer_at ON cdrs(offer_at);
     CREATE INDEX cdrs_customer ON cdrs(customer_number);
     CREATE INDEX cdrs_business ON cdrs(business_number);
     CREATE TABLE live_calls (
        wa_call_id TEXT PRIMARY KEY,
        record TEXT NOT NULL,
        updated_at INTEGER NOT NULL
     );",
];

/// Options for opening a store.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Append every final record as one JSON line to this file, for log shippers.
    pub jsonl_path: Option<PathBuf>,
}

/// Filters for [`CdrStore::list`]. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct CdrFilter {
    /// Offered at or after this time.
    pub since: Option<UnixMillis>,
    /// Offered before this time.
    pub until: Option<UnixMillis>,
    /// The business or the customer number equals this (digits; a leading `+` is ignored).
    pub number: Option<String>,
    /// Only this direction.
    pub direction: Option<Direction>,
    /// Only this outcome.
    pub outcome: Option<Outcome>,
    /// At most this many records, newest first (default 1000).
    pub limit: Option<u32>,
}

/// The CDR store. One owner (a blocking thread); not shared between threads.
#[derive(Debug)]
pub struct CdrStore {
    conn: Connection,
    jsonl: Option<(PathBuf, File)>,
}

impl CdrStore {
    /// Opens (creating if needed) the store at `db_path`, applies migrations, switches to WAL
    /// with full synchronous commits, and exports records a previous run left unexported.
    pub fn open(db_path: &Path, options: StoreOptions) -> Result<Self, CdrError> {
        let conn = Connection::open(db_path).map_err(|e| CdrError::sqlite("open database", e))?;
        Self::with_connection(conn, options)
    }

    /// An in-memory store (tests, the demo).
    pub fn open_in_memory(options: StoreOptions) -> Result<Self, CdrError> {
        let conn =
            Connection::open_in_memory().map_err(|e| CdrError::sqlite("open database", e))?;
        Self::with_connection(conn, options)
    }

    fn with_connection(conn: Connection, options: StoreOptions) -> Result<Self, CdrError> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| CdrError::sqlite("set journal_mode=WAL", e))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| CdrError::sqlite("set synchronous=FULL", e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| CdrError::sqlite("set busy_timeout", e))?;
        migrate(&conn)?;
        let jsonl = match options.jsonl_path {
            Some(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| CdrError::Io {
                        path: path.clone(),
                        source: e,
                    })?;
                Some((path, file))
            }
            None => None,
        };
        let mut store = Self { conn, jsonl };
        store.export_pending()?;
        Ok(store)
    }

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<u32, CdrError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get::<_, u32>(0))
            .map_err(|e| CdrError::sqlite("read user_version", e))
    }

    /// Records (or updates) a live call. Call it when the call is offered and at each
    /// milestone (ring, answer), with the current wall time.
    pub fn upsert_live(&mut self, record: &CallRecord, now: UnixMillis) -> Result<(), CdrError> {
        let json = serde_json::to_string(record).map_err(CdrError::Json)?;
        self.conn
            .execute(
                "INSERT INTO live_calls (wa_call_id, record, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(wa_call_id) DO UPDATE SET record = excluded.record,
                                                        updated_at = excluded.updated_at",
                params![record.wa_call_id, json, now.0],
            )
            .map_err(|e| CdrError::sqlite("upsert live call", e))?;
        Ok(())
    }

    /// Writes the final record of a call and forgets its live row, atomically and durably.
    /// Returns `false` (and changes nothing) if a final record for this call id already exists,
    /// so a repeated end is harmless.
    pub fn finish(&mut self, record: &CallRecord) -> Result<bool, CdrError> {
        let json = serde_json::to_string(record).map_err(CdrError::Json)?;
        let tx = self
            .conn
            .transaction()
            .map_err(|e| CdrError::sqlite("begin transaction", e))?;
        let inserted = tx
            .execute(
                "INSERT INTO cdrs (wa_call_id, direction, business_number, customer_number,
                                   offer_at, end_at, outcome, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(wa_call_id) DO NOTHING",
                params![
                    record.wa_call_id,
                    record.direction.as_str(),
                    record.business_number,
                    record.customer_number,
                    record.offer_at.0,
                    record.end_at.map(|t| t.0),
                    record.outcome.as_str(),
                    json,
                ],
            )
            .map_err(|e| CdrError::sqlite("insert cdr", e))?;
        tx.execute(
            "DELETE FROM live_calls WHERE wa_call_id = ?1",
            params![record.wa_call_id],
        )
        .map_err(|e| CdrError::sqlite("delete live call", e))?;
        tx.commit().map_err(|e| CdrError::sqlite("commit cdr", e))?;
        if inserted == 1 {
            self.export_pending()?;
        }
        Ok(inserted == 1)
    }

    /// Turns every live row left by a previous run (crash, kill) into a final record with
    /// outcome `interrupted`. The end time is the row's last update: the last moment the call
    /// was known to be alive. Returns the records written.
    pub fn recover_interrupted(&mut self) -> Result<Vec<CallRecord>, CdrError> {
        let rows: Vec<(String, String, i64)> = {
            let mut stmt = self
                .conn
                .prepare("SELECT wa_call_id, record, updated_at FROM live_calls ORDER BY rowid")
                .map_err(|e| CdrError::sqlite("read live calls", e))?;
            let mapped = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(|e| CdrError::sqlite("read live calls", e))?;
            mapped
                .collect::<Result<_, _>>()
                .map_err(|e| CdrError::sqlite("read live calls", e))?
        };
        let mut recovered = Vec::with_capacity(rows.len());
        for (id, json, updated_at) in rows {
            let mut record: CallRecord = match serde_json::from_str(&json) {
                Ok(r) => r,
                Err(e) => {
                    // A row we cannot read is still a call we must account for.
                    tracing::error!(wa_call_id = %id, error = %e, "unreadable live call row; recording a minimal interrupted record");
                    CallRecord::new(
                        id.clone(),
                        Direction::Inbound,
                        "",
                        "",
                        UnixMillis(updated_at),
                    )
                }
            };
            record.outcome = Outcome::Interrupted;
            record.end_at = Some(UnixMillis(updated_at).max(record.offer_at));
            record.ending = Ending {
                hangup_by: Some(HangupSide::Gateway),
                reason: Some("whatsip stopped while the call was live".to_owned()),
                ..record.ending
            };
            self.finish(&record)?;
            recovered.push(record);
        }
        Ok(recovered)
    }

    /// The live calls currently recorded.
    pub fn live_calls(&self) -> Result<Vec<CallRecord>, CdrError> {
        let mut stmt = self
            .conn
            .prepare("SELECT record FROM live_calls ORDER BY rowid")
            .map_err(|e| CdrError::sqlite("read live calls", e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| CdrError::sqlite("read live calls", e))?;
        let mut out = Vec::new();
        for row in rows {
            let json = row.map_err(|e| CdrError::sqlite("read live calls", e))?;
            out.push(serde_json::from_str(&json).map_err(CdrError::Json)?);
        }
        Ok(out)
    }

    /// The final record of one call.
    pub fn get(&self, wa_call_id: &str) -> Result<Option<CallRecord>, CdrError> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT record FROM cdrs WHERE wa_call_id = ?1",
                params![wa_call_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| CdrError::sqlite("read cdr", e))?;
        json.map(|j| serde_json::from_str(&j).map_err(CdrError::Json))
            .transpose()
    }

    /// Final records matching `filter`, newest first.
    pub fn list(&self, filter: &CdrFilter) -> Result<Vec<CallRecord>, CdrError> {
        let number = filter
            .number
            .as_deref()
            .map(|n| n.strip_prefix('+').unwrap_or(n).to_owned());
        let mut stmt = self
            .conn
            .prepare(
                "SELECT record FROM cdrs
                 WHERE (?1 IS NULL OR offer_at >= ?1)
                   AND (?2 IS NULL OR offer_at < ?2)
                   AND (?3 IS NULL OR business_number = ?3 OR customer_number = ?3)
                   AND (?4 IS NULL OR direction = ?4)
                   AND (?5 IS NULL OR outcome = ?5)
                 ORDER BY offer_at DESC, id DESC
                 LIMIT ?6",
            )
            .map_err(|e| CdrError::sqlite("query cdrs", e))?;
        let rows = stmt
            .query_map(
                params![
                    filter.since.map(|t| t.0),
                    filter.until.map(|t| t.0),
                    number,
                    filter.direction.map(Direction::as_str),
                    filter.outcome.map(Outcome::as_str),
                    filter.limit.unwrap_or(1000),
                ],
                |r| r.get::<_, String>(0),
            )
            .map_err(|e| CdrError::sqlite("query cdrs", e))?;
        let mut out = Vec::new();
        for row in rows {
            let json = row.map_err(|e| CdrError::sqlite("query cdrs", e))?;
            out.push(serde_json::from_str(&json).map_err(CdrError::Json)?);
        }
        Ok(out)
    }

    /// Appends every not-yet-exported final record to the JSON-lines file, syncs it, and marks
    /// the rows exported. No-op without a JSON-lines path.
    fn export_pending(&mut self) -> Result<(), CdrError> {
        let Some((path, file)) = self.jsonl.as_mut() else {
            return Ok(());
        };
        let pending: Vec<(i64, String)> = {
            let mut stmt = self
                .conn
                .prepare("SELECT id, record FROM cdrs WHERE exported = 0 ORDER BY id")
                .map_err(|e| CdrError::sqlite("read unexported cdrs", e))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(|e| CdrError::sqlite("read unexported cdrs", e))?;
            rows.collect::<Result<_, _>>()
                .map_err(|e| CdrError::sqlite("read unexported cdrs", e))?
        };
        if pending.is_empty() {
            return Ok(());
        }
        let mut buf = String::new();
        for (_, json) in &pending {
            buf.push_str(json);
            buf.push('\n');
        }
        let io_err = |e| CdrError::Io {
            path: path.clone(),
            source: e,
        };
        file.write_all(buf.as_bytes()).map_err(io_err)?;
        file.sync_data().map_err(io_err)?;
        let last_id = pending.last().map(|(id, _)| *id).unwrap_or(0);
        self.conn
            .execute(
                "UPDATE cdrs SET exported = 1 WHERE exported = 0 AND id <= ?1",
                params![last_id],
            )
            .map_err(|e| CdrError::sqlite("mark cdrs exported", e))?;
        Ok(())
    }
}

fn migrate(conn: &Connection) -> Result<(), CdrError> {
    let current: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| CdrError::sqlite("read user_version", e))?;
    let known = u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX);
    if current > known {
        return Err(CdrError::SchemaTooNew {
            found: current,
            supported: known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = u32::try_from(i + 1).unwrap_or(u32::MAX);
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {version}; COMMIT;"
        ))
        .map_err(|e| CdrError::sqlite("apply migration", e))?;
        tracing::info!(version, "cdr schema migrated");
    }
    Ok(())
}
