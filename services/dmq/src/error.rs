//! How a command fails: bad flags (exit status 2) or a runtime error (exit status 1). Either is
//! printed as one line on stderr that says what to do.

use std::process::ExitCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// The flags or environment cannot work; nothing was started.
    #[error("{0}")]
    Usage(String),
    /// The command started and then failed.
    #[error("{0}")]
    Runtime(String),
}

impl CliError {
    /// A runtime error from any error value, with its causes on the same line.
    pub fn runtime(e: &(dyn std::error::Error + 'static)) -> CliError {
        CliError::Runtime(one_line(e))
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::from(2),
            CliError::Runtime(_) => ExitCode::FAILURE,
        }
    }
}

/// `e` and its sources joined by ": " (a source already quoted by its parent is not repeated),
/// with any line breaks folded.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("could not bind 127.0.0.1:9093")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chains_causes_on_one_line() {
        let e = Outer(std::io::Error::other("address in use\n(os error 98)"));
        assert_eq!(
            one_line(&e),
            "could not bind 127.0.0.1:9093: address in use (os error 98)"
        );
        let e = std::io::Error::other("x");
        assert_eq!(one_line(&e), "x");
    }
}
