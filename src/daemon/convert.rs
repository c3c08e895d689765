//! Engine types to IDL types. Engines never see the generated protocol types;
//! this is where one becomes the other.

use crate::bootcount::BootState;
use crate::dpkg;
use crate::error::TransactionInfo;
use crate::operations::{Outcome, UpdateInfo};
use crate::progress::Event;
use crate::protocol::sysroot as idl;
use crate::sysroot::DeploymentStatus;

pub fn deployment(d: &DeploymentStatus) -> idl::Deployment {
    idl::Deployment {
        id: d.id.clone(),
        osname: d.osname.clone(),
        checksum: d.checksum.clone(),
        baseChecksum: d.base_checksum.clone(),
        serial: d.serial.into(),
        index: d.index as i64,
        version: d.version.clone(),
        timestamp: d.timestamp as i64,
        refspec: d.refspec.clone(),
        containerImageReference: d.container_image_reference.clone(),
        imageDigest: d.image_digest.clone(),
        pinnedRevision: d.pinned_revision.clone(),
        booted: d.booted,
        staged: d.staged,
        pinned: d.pinned,
        default: d.is_default,
        rollback: d.rollback,
        unlocked: d.unlocked.clone(),
        liveCommit: d.live.as_ref().map(|l| l.commit.clone()),
        livePackages: d.live.as_ref().map(|l| l.packages.clone()),
        bootAssessment: d.boot.as_ref().map(|b| {
            match b {
                BootState::Good => "good",
                BootState::Unassessed { .. } => "unassessed",
                BootState::Failed { .. } => "failed",
            }
            .to_string()
        }),
        bootTriesLeft: match d.boot {
            Some(BootState::Unassessed { tries_left }) => Some(tries_left.into()),
            _ => None,
        },
        bootFailedAt: match d.boot {
            Some(BootState::Failed { at, .. }) => Some(at as i64),
            _ => None,
        },
        bootFailure: match d.boot {
            Some(BootState::Failed { why, .. }) => Some(why.name().to_string()),
            _ => None,
        },
        requestedPackages: d.requested_packages.clone(),
        requestedLocalPackages: d.requested_local_packages.clone(),
        layeredPackages: d.layered_packages.clone(),
        removedBasePackages: d.removed_base_packages.clone(),
        replacedBasePackages: d.replaced_base_packages.clone(),
        kernelArguments: d.kernel_arguments.clone(),
        regenerateInitramfs: d.regenerate_initramfs,
    }
}

pub fn transaction(t: &TransactionInfo) -> idl::Transaction {
    idl::Transaction {
        id: t.id.clone(),
        method: t.method.clone(),
        title: t.title.clone(),
        initiatorUid: t.initiator_uid.into(),
        initiatorPid: t.initiator_pid.map(i64::from),
        startedUsec: t.started_usec as i64,
        cancelling: t.cancelling,
    }
}

pub fn package(p: &dpkg::Package) -> idl::Package {
    idl::Package {
        name: p.name.clone(),
        version: p.version.clone(),
        architecture: p.architecture.clone(),
    }
}

pub fn search_match(m: &crate::operations::SearchMatch) -> idl::SearchMatch {
    idl::SearchMatch {
        name: m.found.name.clone(),
        version: m.found.version.clone(),
        architecture: m.found.architecture.clone(),
        summary: m.found.summary.clone(),
        installed: m.installed,
    }
}

pub fn package_diff(d: &dpkg::PackageDiff) -> idl::PackageDiff {
    let change = |c: &dpkg::PackageChange| idl::PackageChange {
        name: c.name.clone(),
        architecture: c.architecture.clone(),
        fromVersion: c.from_version.clone(),
        toVersion: c.to_version.clone(),
    };
    idl::PackageDiff {
        added: d.added.iter().map(package).collect(),
        removed: d.removed.iter().map(package).collect(),
        upgraded: d.upgraded.iter().map(change).collect(),
        downgraded: d.downgraded.iter().map(change).collect(),
    }
}

pub fn progress(transaction: &str, event: &Event) -> idl::Progress {
    let mut p = idl::Progress {
        transaction: transaction.to_string(),
        kind: idl::Progress_kind::log,
        task: None,
        message: None,
        percent: None,
        bytesDone: None,
        bytesTotal: None,
        bytesPerSecond: None,
    };
    match event {
        Event::TaskBegin(t) => {
            p.kind = idl::Progress_kind::taskBegin;
            p.task = Some(t.clone());
        }
        Event::TaskEnd(t) => {
            p.kind = idl::Progress_kind::taskEnd;
            p.task = Some(t.clone());
        }
        Event::Percent(n) => {
            p.kind = idl::Progress_kind::percent;
            p.percent = Some((*n).into());
        }
        Event::Download {
            bytes_done,
            bytes_total,
            bytes_per_second,
        } => {
            p.kind = idl::Progress_kind::download;
            p.bytesDone = Some(*bytes_done as i64);
            p.bytesTotal = bytes_total.map(|t| t as i64);
            p.bytesPerSecond = Some(*bytes_per_second as i64);
        }
        Event::Log(m) => p.message = Some(m.clone()),
    }
    p
}

pub fn update(u: &UpdateInfo) -> idl::CachedUpdate {
    idl::CachedUpdate {
        refspec: u.refspec.clone(),
        checksum: u.checksum.clone(),
        version: u.version.clone(),
        timestamp: u.timestamp as i64,
        checkedAt: u.checked_at as i64,
        diff: u.diff.as_ref().map(package_diff),
    }
}

pub fn outcome(transaction: &str, o: &Outcome) -> idl::TransactionResult {
    idl::TransactionResult {
        transaction: transaction.to_string(),
        changed: o.changed,
        message: o.message.clone(),
        deployment: o.deployment.as_ref().map(deployment),
        update: o.update.as_ref().map(update),
        diff: o.diff.as_ref().map(package_diff),
        rebootRequired: o.reboot_required,
    }
}

/// The ESP's chain directories and the booted deployment's chain.
pub fn bootloader(
    report: &crate::bootchain::system::Report,
) -> (Vec<idl::EspDirectory>, Option<Vec<idl::BootChainPackage>>) {
    let packages = |versions: &crate::bootchain::Versions| {
        versions
            .iter()
            .map(|(name, version)| idl::BootChainPackage {
                name: name.clone(),
                version: version.clone(),
            })
            .collect::<Vec<_>>()
    };
    let installed = report
        .installed
        .iter()
        .map(|dir| idl::EspDirectory {
            path: format!("EFI/{}", dir.dir),
            present: dir.present,
            packages: dir.versions.as_ref().map(packages),
        })
        .collect();
    (installed, report.deployment.as_ref().map(packages))
}
