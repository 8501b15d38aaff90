//! Call detail records for whatsip.
//!
//! One [`CallRecord`] per call attempt, in both directions: ids of both legs, numbers, the
//! dial-plan rule, timestamps, who hung up and why, codecs, media quality per direction, DTMF
//! count and, for business-initiated calls, billable 6-second pulses with an estimated cost
//! ([`billing`]).
//!
//! [`CdrStore`] keeps them durably in SQLite (WAL, full synchronous commits, schema migrations
//! owned here) with an append-only JSON-lines export, and turns calls that were live during a
//! crash into `interrupted` records at the next start.
//!
//! This crate does blocking IO (SQLite, files); the gateway calls it from a dedicated thread.
//! Wall time is always passed in.
//!
//! ```
//! use whatsip_cdr::{CallRecord, CdrStore, Direction, Outcome, StoreOptions, UnixMillis};
//!
//! let mut store = CdrStore::open_in_memory(StoreOptions::default())?;
//! let mut rec = CallRecord::new("wacid.ABC", Direction::Inbound, "15551441906", "917358580180",
//!                               UnixMillis(1_760_681_506_000));
//! store.upsert_live(&rec, UnixMillis(1_760_681_506_000))?;
//! rec.answer_at = Some(UnixMillis(1_760_681_513_000));
//! rec.end_at = Some(UnixMillis(1_760_681_533_000));
//! rec.outcome = Outcome::Answered;
//! assert!(store.finish(&rec)?);
//! assert_eq!(store.get("wacid.ABC")?.unwrap().talk_time().as_secs(), 20);
//! assert!(store.live_calls()?.is_empty());
//! # Ok::<(), whatsip_cdr::CdrError>(())
//! ```

pub mod billing;
mod export;
mod record;
mod store;

use std::path::PathBuf;

pub use billing::{RateCard, billable_pulses};
pub use export::{CSV_COLUMNS, write_csv, write_json};
pub use record::{
    CallRecord, Cost, Direction, Ending, HangupSide, MediaQuality, Outcome, UnixMillis,
};
pub use store::{CdrFilter, CdrStore, StoreOptions};

/// Errors of the CDR store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CdrError {
    /// SQLite failed while doing `context`.
    #[error("cdr database: {context}: {source}")]
    Sqlite {
        /// What the store was doing.
        context: &'static str,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// Reading or writing a file failed.
    #[error("cdr file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A record could not be (de)serialised.
    #[error("cdr record json: {0}")]
    Json(serde_json::Error),
    /// The database was written by a newer whatsip.
    #[error(
        "cdr database schema version {found} is newer than this whatsip supports ({supported})"
    )]
    SchemaTooNew {
        /// Version found in the file.
        found: u32,
        /// Highest version this build knows.
        supported: u32,
    },
    /// A rate card entry is invalid.
    #[error("rate card: {0}")]
    RateCard(String),
}

impl CdrError {
    fn sqlite(context: &'static str, source: rusqlite::Error) -> Self {
        CdrError::Sqlite { context, source }
    }
}
