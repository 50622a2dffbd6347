//! Facts about the host advertised in capabilities.

/// The host name, or `unknown`.
pub fn hostname() -> String {
    crate::platform::hostname()
}

/// The OS user running the worker.
pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}
