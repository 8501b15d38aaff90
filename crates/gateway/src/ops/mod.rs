//! Operations: Prometheus metrics, the admin HTTP server (`/metrics`, `/healthz`, `/readyz`)
//! and the `whatsip cdr` commands.

pub mod cdr_cli;
pub mod metrics;
pub mod redact;
