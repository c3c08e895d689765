//! Typed errors at module boundaries.
//!
//! Engines use `anyhow` with context internally and raise one of these variants
//! where a caller must be able to tell the case apart (each maps to one IDL error,
//! in `daemon::errors`, the only place that knows the IDL). Because `anyhow` keeps
//! the original error under its context layers, [`Error::classify`] recovers the
//! variant however much context was added on the way up.

use std::path::PathBuf;

/// A transaction as other callers see it (also part of [`Error::TransactionInProgress`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionInfo {
    pub id: String,
    pub method: String,
    pub title: String,
    pub initiator_uid: u32,
    pub initiator_pid: Option<i32>,
    pub started_usec: u64,
    pub cancelling: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path} is not an OSTree sysroot: {reason}")]
    NotASysroot { path: PathBuf, reason: String },
    #[error("transaction {} ({}) is already running", .0.id, .0.title)]
    TransactionInProgress(Box<TransactionInfo>),
    #[error("no transaction is running")]
    NoTransaction,
    #[error("transaction {0} was cancelled")]
    Cancelled(String),
    #[error("{0}")]
    NoDeployment(String),
    #[error("invalid refspec {refspec:?}: {reason}")]
    InvalidRefspec { refspec: String, reason: String },
    #[error("revision {revision:?} not found: {reason}")]
    RevisionNotFound { revision: String, reason: String },
    #[error("refusing to downgrade from {current} to {target} (allow it explicitly)")]
    DowngradeRefused { current: String, target: String },
    #[error("invalid kernel argument {argument:?}: {reason}")]
    InvalidKernelArgument { argument: String, reason: String },
    #[error("fetching from {remote} failed: {reason}")]
    FetchFailed { remote: String, reason: String },
    #[error("signature verification failed for {remote}: {reason}")]
    SignatureInvalid { remote: String, reason: String },
    #[error("invalid package name {name:?}: {reason}")]
    InvalidPackageName { name: String, reason: String },
    #[error("packages not found: {}", .0.join(", "))]
    PackageNotFound(Vec<String>),
    #[error("packages already requested: {}", .0.join(", "))]
    PackageAlreadyRequested(Vec<String>),
    #[error("packages already in the base image: {}", .0.join(", "))]
    PackageInBase(Vec<String>),
    #[error("packages not requested: {}", .0.join(", "))]
    PackageNotRequested(Vec<String>),
    #[error("packages not in the base image: {}", .0.join(", "))]
    PackageNotInBase(Vec<String>),
    #[error("dependency problem: {0}")]
    DependencyProblem(String),
    #[error("invalid package file {path}: {reason}")]
    InvalidPackageFile { path: String, reason: String },
    #[error("{script} of {package} failed with exit status {exit_status}:\n{output}")]
    ScriptFailed {
        package: String,
        script: String,
        exit_status: i32,
        output: String,
    },
    #[error("not supported: {0}")]
    NotSupported(String),
    #[error(transparent)]
    Other(anyhow::Error),
}

impl Error {
    /// Recover the typed variant raised somewhere below, or wrap the whole chain.
    pub fn classify(err: anyhow::Error) -> Error {
        match err.downcast::<Error>() {
            Ok(typed) => typed,
            Err(other) => Error::Other(other),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
