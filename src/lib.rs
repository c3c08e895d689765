//! apt-ostree: atomic, image-based updates and package layering for Debian on OSTree.
//!
//! The crate is one library with two thin binaries (`apt-ostree`, `apt-ostreed`).
//! Layers, from the wire inwards:
//!
//! - [`protocol`]: code generated from `interfaces/*.varlink`; the only copy of the protocol.
//! - [`daemon`]: the Varlink server: socket activation, accept loop with peer
//!   credentials, thin method adapters, and the one mapping from [`error::Error`] to IDL errors.
//! - [`cli`]: the `apt-ostree` command line, a client of the generated code.
//! - [`transaction`]: one mutating operation at a time, its progress stream, cancel and watch.
//! - Engines, which know nothing of Varlink:
//!   - [`sysroot`]: libostree: status, deploy, rollback, cleanup, kernel arguments.
//!   - [`dpkg`]: dpkg databases stored in commits, Debian version ordering, package diffs.
//! - Shared pieces: [`origin`] (the deployment origin file), [`progress`] (events
//!   engines emit), [`error`] (typed errors at module boundaries), [`logging`].

pub mod apt;
pub mod cli;
pub mod compose;
pub mod config;
pub mod daemon;
pub mod dpkg;
pub mod error;
pub mod layering;
pub mod logging;
pub mod origin;
pub mod outcome;
pub mod progress;
pub mod protocol;
pub mod sandbox;
pub mod sysroot;
pub mod transaction;
pub mod tree;
