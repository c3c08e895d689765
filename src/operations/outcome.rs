//! What an operation did: engines return it, transactions carry it to every
//! follower, and the daemon turns it into the IDL's `TransactionResult`.

use serde::{Deserialize, Serialize};

use crate::dpkg::PackageDiff;
use crate::sysroot::DeploymentStatus;

/// An update found on the origin's remote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateInfo {
    pub refspec: String,
    pub checksum: String,
    pub version: Option<String>,
    pub timestamp: u64,
    /// When the check ran, seconds since the epoch.
    pub checked_at: u64,
    #[serde(skip)]
    pub diff: Option<PackageDiff>,
}

#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// False when there was nothing to do.
    pub changed: bool,
    pub message: String,
    /// The deployment written, if one was.
    pub deployment: Option<DeploymentStatus>,
    pub update: Option<UpdateInfo>,
    pub diff: Option<PackageDiff>,
    pub reboot_required: bool,
}

impl Outcome {
    pub fn unchanged(message: impl Into<String>) -> Outcome {
        Outcome {
            changed: false,
            message: message.into(),
            ..Default::default()
        }
    }
}
