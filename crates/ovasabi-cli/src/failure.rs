//! How a failed command ends: a message on stderr naming the problem, and an exit code.
//!
//! Exit codes: `2` the input was wrong (nothing was written); `1` the command could not
//! complete (storage, a locked data directory, a broker down); `3` a check ran and found a
//! problem (`ovasabi audit verify` on a tampered trail).

use ovasabi_core::BusError;

/// A command's failure.
#[derive(Debug)]
pub(crate) struct Failure {
    message: String,
    code: i32,
    /// Whether it is the embedded bus's data directory held by another process.
    data_dir_locked: bool,
}

impl Failure {
    /// Bad input: exit code 2.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 2,
            data_dir_locked: false,
        }
    }

    /// The command could not complete: exit code 1.
    pub(crate) fn runtime(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 1,
            data_dir_locked: false,
        }
    }

    /// A check ran and failed: exit code 3.
    pub(crate) fn check(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 3,
            data_dir_locked: false,
        }
    }

    /// Whether the embedded bus's data directory is held by another process (a running
    /// `ovasabi up`).
    pub(crate) fn is_data_dir_locked(&self) -> bool {
        self.data_dir_locked
    }

    /// Prints the message and exits.
    pub(crate) fn exit(self) -> ! {
        eprintln!("error: {}", self.message);
        std::process::exit(self.code)
    }
}

impl From<BusError> for Failure {
    fn from(e: BusError) -> Self {
        let mut failure = if e.is_user_error() {
            Failure::usage(e.to_string())
        } else {
            Failure::runtime(e.to_string())
        };
        failure.data_dir_locked = matches!(e, BusError::DataDirLocked { .. });
        failure
    }
}
