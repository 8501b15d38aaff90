//! `whatsip cdr list|show|export`: read the CDR database.
//!
//! The commands open the SQLite store read-mostly (WAL lets them run next to a live
//! gateway) and write to the given writer, so they are tested without a process.

use std::io::Write;
use std::path::Path;

use whatsip_cdr::{
    CallRecord, CdrError, CdrFilter, CdrStore, Direction, Outcome, StoreOptions, UnixMillis,
};

/// The `cdr` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CdrCommand {
    /// One line per call attempt, newest first.
    List {
        #[allow(missing_docs)] // a doc comment here would replace clap's help text
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Every field of one call (JSON).
    Show {
        /// The WhatsApp call id (`wacid.…`).
        wa_call_id: String,
    },
    /// Export records as CSV or JSON, newest first.
    Export {
        #[allow(missing_docs)] // a doc comment here would replace clap's help text
        #[command(flatten)]
        filter: FilterArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
        format: ExportFormat,
    },
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// RFC 4180 CSV with a header row.
    Csv,
    /// One JSON array.
    Json,
}

/// Filters shared by `list` and `export`.
#[derive(Debug, Default, clap::Args)]
pub struct FilterArgs {
    /// Offered at or after this time (RFC 3339, e.g. 2026-01-05T10:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Offered before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// The business or the customer number (E.164).
    #[arg(long, value_name = "NUMBER")]
    pub number: Option<String>,
    /// `inbound` or `outbound`.
    #[arg(long)]
    pub direction: Option<String>,
    /// `answered`, `rejected`, `no_answer`, `cancelled`, `refused`, `failed`, `interrupted`.
    #[arg(long)]
    pub outcome: Option<String>,
    /// At most this many records (0: the store's default, 1000).
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
}

/// Why a `cdr` command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CdrCliError {
    /// A command-line value is unusable.
    #[error("{arg}: {reason}")]
    Arg {
        /// The argument.
        arg: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] CdrError),
    /// No record with this id.
    #[error("no call {0}")]
    NotFound(String),
    /// Writing the output failed.
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
}

impl FilterArgs {
    /// The store filter; errors name the argument.
    pub fn to_filter(&self) -> Result<CdrFilter, CdrCliError> {
        let time = |arg: &'static str, v: &Option<String>| -> Result<_, CdrCliError> {
            v.as_deref()
                .map(|s| {
                    s.parse::<jiff::Timestamp>()
                        .map(|t| UnixMillis(t.as_millisecond()))
                        .map_err(|e| CdrCliError::Arg {
                            arg,
                            reason: format!("{s:?} is not an RFC 3339 time: {e}"),
                        })
                })
                .transpose()
        };
        let direction = self
            .direction
            .as_deref()
            .map(|d| {
                Direction::parse(d).ok_or_else(|| CdrCliError::Arg {
                    arg: "--direction",
                    reason: format!("{d:?}: use inbound or outbound"),
                })
            })
            .transpose()?;
        let outcome = self
            .outcome
            .as_deref()
            .map(|o| {
                Outcome::parse(o).ok_or_else(|| CdrCliError::Arg {
                    arg: "--outcome",
                    reason: format!(
                        "{o:?}: use one of {}",
                        Outcome::ALL.map(Outcome::as_str).join(", ")
                    ),
                })
            })
            .transpose()?;
        Ok(CdrFilter {
            since: time("--since", &self.since)?,
            until: time("--until", &self.until)?,
            number: self.number.clone(),
            direction,
            outcome,
            limit: (self.limit > 0).then_some(self.limit),
        })
    }
}

/// Runs one `cdr` command against the database at `db`, writing to `out`.
pub fn run_cdr_command(
    db: &Path,
    command: &CdrCommand,
    out: &mut dyn Write,
) -> Result<(), CdrCliError> {
    if !db.is_file() {
        return Err(CdrCliError::Arg {
            arg: "--db",
            reason: format!("{} does not exist", db.display()),
        });
    }
    let store = CdrStore::open(db, StoreOptions::default())?;
    match command {
        CdrCommand::List { filter } => {
            let records = store.list(&filter.to_filter()?)?;
            writeln!(
                out,
                "{:<24} {:<8} {:<11} {:<16} {:<16} {:>7}  WA CALL ID",
                "OFFERED (UTC)", "DIR", "OUTCOME", "CUSTOMER", "BUSINESS", "TALK_S"
            )?;
            for r in &records {
                writeln!(out, "{}", list_line(r))?;
            }
        }
        CdrCommand::Show { wa_call_id } => {
            let r = store
                .get(wa_call_id)?
                .ok_or_else(|| CdrCliError::NotFound(wa_call_id.clone()))?;
            serde_json::to_writer_pretty(&mut *out, &r).map_err(std::io::Error::other)?;
            writeln!(out)?;
        }
        CdrCommand::Export { filter, format } => {
            let records = store.list(&filter.to_filter()?)?;
            match format {
                ExportFormat::Csv => whatsip_cdr::write_csv(&records, &mut *out)?,
                ExportFormat::Json => whatsip_cdr::write_json(&records, &mut *out)?,
            }
        }
    }
    Ok(())
}

fn list_line(r: &CallRecord) -> String {
    let offered = jiff::Timestamp::from_millisecond(r.offer_at.0)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| r.offer_at.0.to_string());
    format!(
        "{:<24} {:<8} {:<11} {:<16} {:<16} {:>7}  {}",
        offered,
        r.direction.as_str(),
        r.outcome.as_str(),
        r.customer_number,
        r.business_number,
        r.talk_time().as_secs(),
        r.wa_call_id
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn filled(dir: &Path) -> std::path::PathBuf {
        let db = dir.join("cdr.db");
        let mut store = CdrStore::open(&db, StoreOptions::default()).unwrap();
        // 2026-01-05T10:00:00Z
        let t0 = 1_767_607_200_000;
        let mut a = CallRecord::new(
            "wacid.A",
            Direction::Inbound,
            "4930901820",
            "4915112345678",
            UnixMillis(t0),
        );
        a.answer_at = Some(UnixMillis(t0 + 5_000));
        a.end_at = Some(UnixMillis(t0 + 65_000));
        a.outcome = Outcome::Answered;
        store.finish(&a).unwrap();
        let mut b = CallRecord::new(
            "wacid.B",
            Direction::Inbound,
            "4930901820",
            "4915187654321",
            UnixMillis(t0 + 3_600_000),
        );
        b.end_at = Some(UnixMillis(t0 + 3_603_000));
        b.outcome = Outcome::Rejected;
        b.ending.sip_status = Some(486);
        store.finish(&b).unwrap();
        let mut c = CallRecord::new(
            "wacid.C",
            Direction::Outbound,
            "4930901820",
            "919876543210",
            UnixMillis(t0 + 7_200_000),
        );
        c.answer_at = Some(UnixMillis(t0 + 7_210_000));
        c.end_at = Some(UnixMillis(t0 + 7_217_000));
        c.outcome = Outcome::Answered;
        c.billable_pulses = Some(2);
        store.finish(&c).unwrap();
        db
    }

    fn run(db: &Path, cmd: CdrCommand) -> Result<String, CdrCliError> {
        let mut out = Vec::new();
        run_cdr_command(db, &cmd, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn list(db: &Path, filter: FilterArgs) -> Vec<String> {
        let text = run(db, CdrCommand::List { filter }).unwrap();
        text.lines().skip(1).map(str::to_owned).collect()
    }

    #[test]
    fn list_filters_by_outcome_direction_number_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let db = filled(dir.path());
        let all = list(&db, FilterArgs::default());
        assert_eq!(all.len(), 3, "{all:?}");
        // newest first
        assert!(all[0].ends_with("wacid.C") && all[2].ends_with("wacid.A"));
        assert!(all[2].starts_with("2026-01-05T10:00:00Z"), "{}", all[2]);
        assert!(all[2].contains(" 60  wacid.A"), "talk seconds: {}", all[2]);

        let answered = list(
            &db,
            FilterArgs {
                outcome: Some("answered".into()),
                ..FilterArgs::default()
            },
        );
        assert_eq!(answered.len(), 2);
        let outbound = list(
            &db,
            FilterArgs {
                direction: Some("outbound".into()),
                ..FilterArgs::default()
            },
        );
        assert_eq!(outbound.len(), 1);
        assert!(outbound[0].ends_with("wacid.C"));
        let by_number = list(
            &db,
            FilterArgs {
                number: Some("+4915187654321".into()),
                ..FilterArgs::default()
            },
        );
        assert_eq!(by_number.len(), 1);
        assert!(by_number[0].ends_with("wacid.B"));
        let window = list(
            &db,
            FilterArgs {
                since: Some("2026-01-05T10:30:00Z".into()),
                until: Some("2026-01-05T11:30:00Z".into()),
                ..FilterArgs::default()
            },
        );
        assert_eq!(window.len(), 1);
        assert!(window[0].ends_with("wacid.B"));
    }

    #[test]
    fn bad_filters_name_the_argument() {
        let dir = tempfile::tempdir().unwrap();
        let db = filled(dir.path());
        let e = run(
            &db,
            CdrCommand::List {
                filter: FilterArgs {
                    outcome: Some("busy".into()),
                    ..FilterArgs::default()
                },
            },
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("--outcome"), "{e}");
        let e = run(
            &db,
            CdrCommand::List {
                filter: FilterArgs {
                    since: Some("yesterday".into()),
                    ..FilterArgs::default()
                },
            },
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("--since"), "{e}");
        let e = run(
            &dir.path().join("missing.db"),
            CdrCommand::Show {
                wa_call_id: "x".into(),
            },
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("--db"), "{e}");
    }

    #[test]
    fn show_prints_one_record_as_json() {
        let dir = tempfile::tempdir().unwrap();
        let db = filled(dir.path());
        let text = run(
            &db,
            CdrCommand::Show {
                wa_call_id: "wacid.B".into(),
            },
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["wa_call_id"], "wacid.B");
        assert_eq!(v["outcome"], "rejected");
        assert_eq!(v["ending"]["sip_status"], 486);
        assert!(matches!(
            run(
                &db,
                CdrCommand::Show {
                    wa_call_id: "wacid.nope".into()
                }
            ),
            Err(CdrCliError::NotFound(_))
        ));
    }

    #[test]
    fn export_writes_csv_and_json_with_filters() {
        let dir = tempfile::tempdir().unwrap();
        let db = filled(dir.path());
        let csv = run(
            &db,
            CdrCommand::Export {
                filter: FilterArgs {
                    outcome: Some("answered".into()),
                    ..FilterArgs::default()
                },
                format: ExportFormat::Csv,
            },
        )
        .unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3, "{csv}");
        assert_eq!(lines[0], whatsip_cdr::CSV_COLUMNS.join(","));
        assert!(lines[1].starts_with("wacid.C,"), "{csv}");
        assert!(lines[2].starts_with("wacid.A,"), "{csv}");

        let json = run(
            &db,
            CdrCommand::Export {
                filter: FilterArgs::default(),
                format: ExportFormat::Json,
            },
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let arr = v.as_array().unwrap();
        assert_eq!(arr.len(), 3);
        assert_eq!(arr[0]["billable_pulses"], 2);
    }
}
