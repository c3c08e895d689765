//! `apt-ostree install-os`: putting apt-ostree on a machine that already
//! exists (issue 31). So far: what it checks before it changes anything.

pub mod preflight;
