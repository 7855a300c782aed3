//! Placeholder for the failure classifier: the failure type the sender reports.

/// What went wrong in one delivery attempt, as the sender saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    /// The server answered with a negative reply.
    Reply {
        code: u16,
        enhanced: Option<String>,
        text: String,
    },
    /// No usable reply: the connection failed.
    Connection {
        error: ConnectionError,
        detail: String,
    },
}

/// How a connection failed before a reply could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionError {
    Refused,
    Timeout,
    Tls,
    Dns,
    Disconnected,
    Other,
}
