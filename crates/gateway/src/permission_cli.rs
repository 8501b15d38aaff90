//! `whatsip permissions show|request BUSINESS USER`: the CLI side of the admin API's
//! permission routes (`/permissions/{business}/{user}`), over plain HTTP/1.1 to the
//! running gateway's admin listener (loopback by default).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// What to do.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum PermissionCommand {
    /// Show what the gateway knows about a user's call permission and counters.
    Show {
        /// The business number (E.164).
        business: String,
        /// The WhatsApp user (E.164).
        user: String,
    },
    /// Send a `call_permission_request` now (refused when Meta's limits forbid it).
    Request {
        /// The business number (E.164).
        business: String,
        /// The WhatsApp user (E.164).
        user: String,
    },
}

/// Why the command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PermissionCliError {
    /// The admin listener could not be reached or answered badly.
    #[error("admin api at {addr}: {reason}")]
    Admin {
        /// Where.
        addr: SocketAddr,
        /// What happened.
        reason: String,
    },
    /// The gateway refused (status and its JSON body).
    #[error("admin api answered {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Body.
        body: String,
    },
}

/// Runs `command` against the admin API at `admin`; writes the JSON answer to `out`.
pub fn run(
    admin: SocketAddr,
    command: &PermissionCommand,
    out: &mut dyn Write,
) -> Result<(), PermissionCliError> {
    let (method, path) = match command {
        PermissionCommand::Show { business, user } => (
            "GET",
            format!("/permissions/{}/{}", enc(business), enc(user)),
        ),
        PermissionCommand::Request { business, user } => (
            "POST",
            format!("/permissions/{}/{}/request", enc(business), enc(user)),
        ),
    };
    let err = |reason: String| PermissionCliError::Admin {
        addr: admin,
        reason,
    };
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(5))
        .map_err(|e| err(e.to_string()))?;
    // a permission request waits for the Graph API (its own timeout is shorter)
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .map_err(|e| err(e.to_string()))?;
    let mut buf = Vec::new();
    // bounded by the read timeout and the server closing the connection
    s.take(1 << 20)
        .read_to_end(&mut buf)
        .map_err(|e| err(e.to_string()))?;
    let text = String::from_utf8_lossy(&buf);
    let status: u16 = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| err("not an HTTP response".into()))?;
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_owned();
    if status != 200 {
        return Err(PermissionCliError::Refused { status, body });
    }
    writeln!(out, "{body}").map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// `+` is safe in a path segment; anything else non-alphanumeric is percent-encoded.
fn enc(s: &str) -> String {
    s.trim()
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'+' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_path_safe() {
        assert_eq!(enc(" +4915112345678 "), "+4915112345678");
        assert_eq!(enc("49/1"), "49%2F1");
    }

    #[test]
    fn unreachable_admin_is_an_error() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap_or_else(|_| unreachable!());
        let cmd = PermissionCommand::Show {
            business: "+4930901820".into(),
            user: "+4915112345678".into(),
        };
        let mut out = Vec::new();
        assert!(matches!(
            run(addr, &cmd, &mut out),
            Err(PermissionCliError::Admin { .. })
        ));
    }
}
