//! The proxy's audit record: one entry per decision, with the bytes a connection moved.

use serde::Serialize;

/// One decision of the proxy. Fields are as the sandbox sent them; the caller redacts
/// before storing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub time_ms: i64,
    pub phase: String,
    /// Absent for a tunnelled connection, whose requests the proxy does not see.
    pub method: Option<String>,
    /// The request's path (without its query); absent, as the method is, for a connection.
    pub path: Option<String>,
    pub host: String,
    pub port: u16,
    /// `allowed`, or the reason it was blocked (`blocked-by-allowlist`, ...).
    pub decision: String,
    /// The rule that decided, when one did.
    pub rule: Option<String>,
    /// Bytes sent upstream and received from it: a connection's, or the bodies of a request
    /// inside an intercepted one.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// `tunnel`, `intercept`, or what else is worth knowing (a placeholder sent elsewhere).
    pub note: Option<String>,
}
