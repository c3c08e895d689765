//! apt-ostree: atomic, image-based updates and package layering for Debian on OSTree.
//!
//! One library with three thin binaries: `apt-ostree` (the CLI),
//! `apt-ostreed` (the daemon) and `apt-ostree-compose` (image builds, exec'd
//! by the CLI). Layers, from the wire inwards; each imports only layers below it:
//!
//! - [`protocol`]: code generated from `interfaces/*.varlink`; the only copy of the protocol.
//! - [`cli`]: the `apt-ostree` command line, a client of the generated code.
//! - [`daemon`]: the Varlink server: socket activation, accept loop with peer
//!   credentials, polkit, limits, thin method adapters.
//! - [`transaction`]: one mutating operation at a time, its progress stream, cancel and watch.
//! - [`operations`]: what users ask for (upgrade, rebase, deploy, rollback,
//!   cleanup, package changes, kernel arguments, initramfs, refresh-md), and
//!   the one rule for where a change starts ([`operations::start`]).
//! - Engines, which know nothing of Varlink or of the operations above them:
//!   - [`layering`]: builds a layered commit (resolve, fetch, checkout, dpkg, finish, commit).
//!   - [`compose`]: builds images from treefiles (`compose tree`, `compose image`).
//!   - [`install`]: `install-os`, apt-ostree onto a machine that exists (its checks so far).
//!   - [`container`]: pulls OCI images (skopeo's image proxy) into deployable commits.
//!   - [`apt`]: libapt-pkg: resolution against a base commit, fetching.
//!   - [`sandbox`]: bubblewrap for dpkg and scripts.
//!   - [`tree`]: the deployable tree layout.
//!   - [`sysroot`]: the libostree adapter (load, status, pull, deploy, commit, lock).
//!   - [`dpkg`]: dpkg databases stored in commits, Debian version ordering, package diffs.
//! - Shared pieces: [`bootchain`] (the signed UEFI boot chain a tree
//!   carries and its place on the ESP), [`bootcount`] (GRUB's count of boots and the record of
//!   failed ones: what status reads and the boot units act on), [`error`] (the typed errors and their IDL names),
//!   [`origin`] (the deployment origin file), [`refspec`], [`imgref`]
//!   (container image references), [`fsutil`] (atomic writes), [`kargs`] (kernel
//!   command lines), [`config`] (apt-ostreed.conf), [`progress`] (events
//!   engines emit), [`logging`].

pub mod apt;
pub mod boot;
pub mod bootchain;
pub mod bootcount;
pub mod cli;
pub mod compose;
pub mod config;
pub mod container;
pub mod daemon;
pub mod dpkg;
pub mod error;
pub mod fsutil;
pub mod imgref;
pub mod install;
pub mod kargs;
pub mod layering;
pub mod live;
pub mod logging;
pub mod operations;
pub mod origin;
pub mod process;
pub mod progress;
pub mod protocol;
pub mod refspec;
pub mod sandbox;
pub mod sysroot;
pub mod transaction;
pub mod tree;
