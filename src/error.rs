//! The crate's error type, and the one place it is mapped to a stable wire code.

use std::sync::Arc;

use crate::model::Invalid;
use crate::proto::ErrorCode;
use crate::sys::cmd::CmdError;

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong inside shelfd, with enough context to act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request is malformed or breaks a rule of the tree.
    #[error("{0}")]
    Invalid(String),
    /// The named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// An object with that name exists already, with different parameters.
    #[error("{0}")]
    AlreadyExists(String),
    /// The object has dependents (snapshots, exports, attachments).
    #[error("{0}")]
    HasDependents(String),
    /// Not enough space in the pool or on its filesystem.
    #[error("{0}")]
    NoSpace(String),
    /// The object is in use or in the middle of another operation.
    #[error("{0}")]
    Busy(String),
    /// The operation or driver is not available here.
    #[error("{0}")]
    Unsupported(String),
    /// The peer may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the object.
        context: String,
        /// The OS error.
        source: Arc<std::io::Error>,
    },
    /// An external command failed.
    #[error(transparent)]
    Command(#[from] CmdError),
    /// The database failed.
    #[error("database: {0}")]
    Db(String),
    /// Anything else that should not happen.
    #[error("{0}")]
    Internal(String),
    /// A volume or snapshot on disk is not the file shelf made: a symbolic link, a hard
    /// link, a FIFO, a directory, a device, or a file without its own identity, planted by
    /// a client of the share's NFS export. Nothing was done to it.
    #[error("{0}")]
    Tampered(String),
    /// The operation failed and so did undoing it; both causes are kept.
    #[error("{cause}; and undoing it failed too: {rollback}")]
    Rollback {
        /// Why the operation failed.
        cause: Box<Error>,
        /// Why the undo failed.
        rollback: Box<Error>,
    },
}

impl Error {
    /// The stable wire code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Invalid(_) => ErrorCode::InvalidArgument,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Error::HasDependents(_) => ErrorCode::HasDependents,
            Error::NoSpace(_) => ErrorCode::NoSpace,
            Error::Busy(_) => ErrorCode::Busy,
            Error::Unsupported(_) => ErrorCode::Unsupported,
            Error::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Error::Io { source, .. } => match source.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => ErrorCode::NoSpace,
                // An extended attribute too large for the pool's filesystem.
                Some(libc::E2BIG) => ErrorCode::InvalidArgument,
                _ => ErrorCode::Internal,
            },
            Error::Command(CmdError::NotFound { .. }) => ErrorCode::Unsupported,
            Error::Command(CmdError::TimedOut { .. }) => ErrorCode::Busy,
            Error::Command(_) | Error::Db(_) | Error::Internal(_) => ErrorCode::Internal,
            Error::Tampered(_) => ErrorCode::Tampered,
            Error::Rollback { cause, .. } => cause.code(),
        }
    }

    /// The error a wire code and message stand for (replaying a kept answer).
    pub fn from_code(code: ErrorCode, message: String) -> Self {
        match code {
            ErrorCode::NotFound => Error::NotFound(message),
            ErrorCode::AlreadyExists => Error::AlreadyExists(message),
            ErrorCode::InvalidArgument => Error::Invalid(message),
            ErrorCode::HasDependents => Error::HasDependents(message),
            ErrorCode::NoSpace => Error::NoSpace(message),
            ErrorCode::Busy => Error::Busy(message),
            ErrorCode::Unsupported => Error::Unsupported(message),
            ErrorCode::PermissionDenied => Error::PermissionDenied(message),
            ErrorCode::Internal => Error::Internal(message),
            ErrorCode::Tampered => Error::Tampered(message),
        }
    }

    /// Wrap an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    /// Combine an operation's failure with the failure of its undo.
    pub fn rollback(cause: Error, rollback: Error) -> Self {
        Error::Rollback {
            cause: Box::new(cause),
            rollback: Box::new(rollback),
        }
    }
}

impl From<Invalid> for Error {
    fn from(e: Invalid) -> Self {
        Error::Invalid(e.0)
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Db(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_maps_to_no_space() {
        let e = Error::io("growing x", std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.code(), ErrorCode::NoSpace);
        let e = Error::io("x", std::io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(e.code(), ErrorCode::Internal);
    }

    #[test]
    fn rollback_keeps_the_cause_code_and_both_messages() {
        let e = Error::rollback(
            Error::NoSpace("full".into()),
            Error::Internal("stuck".into()),
        );
        assert_eq!(e.code(), ErrorCode::NoSpace);
        assert!(e.to_string().contains("full") && e.to_string().contains("stuck"));
    }
}
