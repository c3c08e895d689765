//! Moving to another base commit: upgrade, rebase, deploy, refresh-md.

use std::path::Path;

use anyhow::Result;

use super::{start, Outcome, Start, UpdateInfo};
use crate::dpkg;
use crate::error::Error;
use crate::imgref::ImageReference;
use crate::origin::{Base, Origin};
use crate::progress::Sink;
use crate::refspec::{Refspec, Revision};
use crate::sysroot::{pull, pull_subdir, CommitInfo, PullRequest, Sysroot};

use super::steps::{
    check_downgrade, clear_cached_update, deploy_base, now, refuse_failed_update,
    store_cached_update, UpgradeOptions,
};

/// The OSTree refspec a deployment follows; images have none.
fn ostree_refspec(origin: &Origin, what: &str) -> Result<Refspec> {
    match &origin.base {
        Base::Refspec(r) => Ok(Refspec::parse(r)?),
        Base::Image(image) => Err(Error::NotSupported {
            reason: format!("{what} of a deployment that follows the container image {image}"),
        }
        .into()),
    }
}

/// The URL of the export at `from` (`--from DIR`), checked before anything
/// is fetched; `None` fetches from the remote's own URL.
fn export_url(from: Option<&Path>, refspec: &Refspec) -> Result<Option<String>> {
    let Some(dir) = from else {
        return Ok(None);
    };
    let invalid = |reason: String| Error::InvalidUpdateDirectory {
        path: dir.display().to_string(),
        reason,
    };
    if refspec.remote.is_none() {
        return Err(invalid(format!(
            "{refspec} has no remote, whose keys would check the export"
        ))
        .into());
    }
    Ok(Some(super::offline::source_url(dir).map_err(invalid)?))
}

/// Pull `commit` (or the head) of `refspec`, from the remote or from the
/// export at `url`; return the commit's checksum.
fn fetch(
    sysroot: &Sysroot,
    sink: &Sink,
    refspec: &Refspec,
    commit: Option<&str>,
    metadata_only: bool,
    url: Option<&str>,
) -> Result<String> {
    let repo = sysroot.repo();
    // A commit we already have whole (e.g. after --download-only) needs no network.
    let complete_locally = commit.is_some_and(|c| {
        repo.load_commit(c)
            .is_ok_and(|(_, state)| !state.contains(ostree::RepoCommitState::PARTIAL))
    });
    if let (Some(remote), false) = (&refspec.remote, complete_locally) {
        pull(
            &repo,
            &PullRequest {
                remote,
                branch: &refspec.branch,
                commit,
                metadata_only,
                depth: 0,
                url,
            },
            sink,
        )?;
    }
    match commit {
        Some(c) => Ok(c.to_string()),
        None => repo
            .resolve_rev(&refspec.to_string(), false)
            .map_err(|e| Error::InvalidRefspec {
                refspec: refspec.to_string(),
                reason: e.message().to_string(),
            })?
            .map(|c| c.to_string())
            .ok_or_else(|| {
                Error::InvalidRefspec {
                    refspec: refspec.to_string(),
                    reason: "no such ref".into(),
                }
                .into()
            }),
    }
}

/// The commits of `refspec`'s history present in the repository, newest
/// first (history ends where the repository has no more commit objects).
fn ref_history(sysroot: &mut Sysroot, refspec: &str) -> Vec<CommitInfo> {
    let mut next = sysroot
        .repo()
        .resolve_rev(refspec, true)
        .ok()
        .flatten()
        .map(|c| c.to_string());
    let mut commits = Vec::new();
    while let Some(checksum) = next {
        let Ok(info) = sysroot.commit_info(&checksum) else {
            break;
        };
        next = info.parent.clone();
        commits.push(info);
    }
    commits
}

/// Find the commit of `refspec`'s history whose version is `version`.
fn find_version(
    sysroot: &mut Sysroot,
    sink: &Sink,
    refspec: &Refspec,
    version: &str,
    url: Option<&str>,
) -> Result<String> {
    let repo = sysroot.repo();
    if let Some(remote) = &refspec.remote {
        pull(
            &repo,
            &PullRequest {
                remote,
                branch: &refspec.branch,
                commit: None,
                metadata_only: true,
                depth: -1,
                url,
            },
            sink,
        )?;
    }
    if let Some(found) = ref_history(sysroot, &refspec.to_string())
        .into_iter()
        .find(|c| c.version.as_deref() == Some(version))
    {
        return Ok(found.checksum);
    }
    Err(Error::RevisionNotFound {
        revision: version.to_string(),
        reason: format!("no commit with that version in the history of {refspec}"),
    }
    .into())
}

fn update_info(sysroot: &mut Sysroot, refspec: &Refspec, checksum: &str) -> Result<UpdateInfo> {
    let info = sysroot.commit_info(checksum)?;
    Ok(UpdateInfo {
        refspec: refspec.to_string(),
        checksum: checksum.to_string(),
        version: info.version,
        timestamp: info.timestamp,
        checked_at: now(),
        diff: None,
    })
}

/// The package changes from the default deployment's base image to `commit`.
fn diff_from_default_base(sysroot: &mut Sysroot, commit: &str) -> Result<dpkg::PackageDiff> {
    let base = start(sysroot)?.base;
    Ok(dpkg::diff(
        &sysroot.packages(&base)?,
        &sysroot.packages(commit)?,
    ))
}

/// `upgrade`: fetch the origin's newest commit and deploy it.
pub fn upgrade(sysroot: &mut Sysroot, sink: &Sink, opts: &UpgradeOptions) -> Result<Outcome> {
    let start = start(sysroot)?;
    if let Base::Image(image) = &start.origin.base {
        let image = image.clone();
        return super::image::upgrade(sysroot, sink, opts, start, &image);
    }
    let Start {
        origin,
        base: current_base,
        ..
    } = start;
    let refspec = ostree_refspec(&origin, "upgrade")?;
    let metadata_only = (opts.check || opts.preview) && !opts.download_only;
    let url = export_url(opts.from.as_deref(), &refspec)?;
    let head = fetch(sysroot, sink, &refspec, None, metadata_only, url.as_deref())?;
    let pinned = origin.override_commit.is_some();
    if head == current_base && !pinned {
        clear_cached_update(sysroot);
        return Ok(Outcome::unchanged("No upgrade available."));
    }
    check_downgrade(sysroot, &current_base, &head, opts.allow_downgrade)?;
    let mut update = update_info(sysroot, &refspec, &head)?;
    if opts.check || opts.preview {
        if opts.preview {
            // Only the dpkg database of the new commit is needed for the diff.
            if let Some(remote) = &refspec.remote {
                let repo = sysroot.repo();
                pull_subdir(
                    &repo,
                    remote,
                    &refspec.branch,
                    &head,
                    dpkg::DATABASE_DIR,
                    url.as_deref(),
                    sink,
                )?;
            }
            update.diff = Some(diff_from_default_base(sysroot, &head)?);
        }
        store_cached_update(sysroot, &update)?;
        // Layered packages are built again on the new base: the diff is
        // the base image's, and they are kept.
        let layered: Vec<String> = origin
            .requested_packages
            .iter()
            .chain(origin.requested_local_packages.keys())
            .cloned()
            .collect();
        let message = if opts.preview && !layered.is_empty() {
            format!("Layered packages kept: {}", layered.join(" "))
        } else {
            String::new()
        };
        return Ok(Outcome {
            changed: true,
            message,
            diff: update.diff.clone(),
            update: Some(update),
            ..Default::default()
        });
    }
    if opts.download_only {
        store_cached_update(sysroot, &update)?;
        return Ok(Outcome {
            changed: true,
            message: format!(
                "Update {} downloaded; `apt-ostree upgrade` deploys it without network",
                update.version.as_deref().unwrap_or(&head)
            ),
            update: Some(update),
            ..Default::default()
        });
    }
    let mut origin = origin;
    origin.override_commit = None;
    refuse_failed_update(sysroot, &head, &origin, opts.retry_failed)?;
    let outcome = deploy_base(sysroot, sink, &head, &origin)?;
    clear_cached_update(sysroot);
    Ok(outcome)
}

/// `rebase`: switch the origin to another refspec and deploy it.
pub fn rebase(
    sysroot: &mut Sysroot,
    sink: &Sink,
    refspec: &str,
    revision: Option<&str>,
    from: Option<&Path>,
) -> Result<Outcome> {
    if ImageReference::is_image_reference(refspec) {
        return super::image::rebase(
            sysroot,
            sink,
            ImageReference::parse(refspec)?,
            revision,
            from,
        );
    }
    let origin = start(sysroot)?.origin;
    let target = match &origin.base {
        Base::Refspec(current) => Refspec::parse(refspec)?.or_branch_of(&Refspec::parse(current)?),
        Base::Image(_) => {
            let target = Refspec::parse(refspec)?;
            if target.branch.is_empty() {
                return Err(Error::InvalidRefspec {
                    refspec: refspec.to_string(),
                    reason: "the deployment follows a container image: name the ref too".into(),
                }
                .into());
            }
            target
        }
    };
    let url = export_url(from, &target)?;
    let commit = match revision.map(Revision::parse).transpose()? {
        None => fetch(sysroot, sink, &target, None, false, url.as_deref())?,
        Some(revision) => fetch_revision(sysroot, sink, &target, &revision, url.as_deref())?,
    };
    let mut origin = origin;
    origin.base = Base::Refspec(target.to_string());
    origin.override_commit = revision.map(|_| commit.clone());
    refuse_failed_update(sysroot, &commit, &origin, false)?;
    let mut outcome = deploy_base(sysroot, sink, &commit, &origin)?;
    outcome.message = format!("Rebased to {target}: {}", outcome.message);
    Ok(outcome)
}

/// Whether a pull's error is the remote saying the object does not exist.
/// libostree's fetcher says "Server returned HTTP 404"; a bare "404" is
/// not enough, since a URL's port (127.0.0.1:40467) may contain it.
fn says_not_found(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    reason.contains("http 404") || reason.contains("not found") || reason.contains("no such")
}

/// Pull the commit of `refspec` that `revision` names; its checksum.
fn fetch_revision(
    sysroot: &mut Sysroot,
    sink: &Sink,
    refspec: &Refspec,
    revision: &Revision,
    url: Option<&str>,
) -> Result<String> {
    match revision {
        Revision::Checksum(checksum) => fetch(sysroot, sink, refspec, Some(checksum), false, url)
            .map_err(|e| match Error::classify(e) {
                // The remote answered that it has no such commit; an
                // unreachable remote stays a FetchFailed.
                Error::FetchFailed { reason, .. } if says_not_found(&reason) => {
                    Error::RevisionNotFound {
                        revision: checksum.clone(),
                        reason,
                    }
                    .into()
                }
                other => anyhow::Error::from(other),
            }),
        Revision::Version(version) => {
            let commit = find_version(sysroot, sink, refspec, version, url)?;
            fetch(sysroot, sink, refspec, Some(&commit), false, url)
        }
    }
}

/// `deploy`: a version or checksum of the current ref, pinned in the origin.
pub fn deploy_revision(
    sysroot: &mut Sysroot,
    sink: &Sink,
    revision: &str,
    allow_downgrade: bool,
    from: Option<&Path>,
) -> Result<Outcome> {
    let Start {
        origin,
        base: current_base,
        ..
    } = start(sysroot)?;
    if let Base::Image(image) = &origin.base {
        // An image's revisions are its digests: deploying one pins it.
        return super::image::deploy(sysroot, sink, image, revision, allow_downgrade, from);
    }
    let refspec = ostree_refspec(&origin, "deploy")?;
    let url = export_url(from, &refspec)?;
    let commit = fetch_revision(
        sysroot,
        sink,
        &refspec,
        &Revision::parse(revision)?,
        url.as_deref(),
    )?;
    if commit == current_base {
        return Ok(Outcome::unchanged(format!(
            "{revision} is already deployed"
        )));
    }
    check_downgrade(sysroot, &current_base, &commit, allow_downgrade)?;
    let mut origin = origin;
    origin.override_commit = Some(commit.clone());
    deploy_base(sysroot, sink, &commit, &origin)
}

/// `refresh-md`: update what we know of the origin's remote and the
/// deployment's apt sources (the lists only when stale, unless `force`).
pub fn refresh_metadata(sysroot: &mut Sysroot, sink: &Sink, force: bool) -> Result<Outcome> {
    let Start {
        origin,
        base: current_base,
        ..
    } = start(sysroot)?;
    crate::layering::refresh_lists(sysroot, sink, &current_base, force)?;
    if let Base::Image(image) = &origin.base {
        let remote = crate::container::inspect(image)?;
        return Ok(Outcome {
            changed: true,
            message: format!(
                "{image} is at {} ({})",
                remote.version.as_deref().unwrap_or("an unversioned image"),
                remote.digest
            ),
            ..Default::default()
        });
    }
    let refspec = ostree_refspec(&origin, "refresh-md")?;
    let head = fetch(sysroot, sink, &refspec, None, true, None)?;
    let info = sysroot.commit_info(&head)?;
    Ok(Outcome {
        changed: true,
        message: format!(
            "{refspec} is at {} ({head})",
            info.version.as_deref().unwrap_or("an unversioned commit")
        ),
        ..Default::default()
    })
}

/// A version of the image, as the Update interface lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageVersion {
    pub version: String,
    pub checksum: String,
    pub timestamp: u64,
    pub installed: bool,
    pub current: bool,
    pub newer: bool,
}

/// The versions of the default deployment's ref known locally, newest first.
pub fn versions(sysroot: &mut Sysroot) -> Result<Vec<ImageVersion>> {
    sysroot.reload(false)?;
    let Start {
        origin,
        commit,
        base: current_base,
        ..
    } = start(sysroot)?;
    let current = sysroot.commit_info(&commit)?;
    let mut installed = std::collections::BTreeSet::new();
    for d in sysroot.ostree().deployments() {
        installed.insert(sysroot.commit_info(&d.csum())?.base().to_string());
    }
    let mut history = match &origin.base {
        Base::Refspec(r) => ref_history(sysroot, r),
        Base::Image(_) => Vec::new(),
    };
    if history.is_empty() {
        // A local origin without its ref any more: the base itsysroot.
        history = ref_history(sysroot, &current_base);
    }
    let versions = history
        .into_iter()
        .map(|info| ImageVersion {
            version: info
                .version
                .clone()
                .unwrap_or_else(|| info.checksum.clone()),
            installed: installed.contains(&info.checksum),
            current: info.checksum == current_base,
            newer: info.timestamp > current.timestamp,
            timestamp: info.timestamp,
            checksum: info.checksum,
        })
        .collect();
    Ok(versions)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_port_with_404_in_it_is_no_missing_revision() {
        assert!(!super::says_not_found(
            "While fetching http://127.0.0.1:40467/config: [7] Couldn't connect to server"
        ));
        assert!(super::says_not_found("Server returned HTTP 404"));
        assert!(super::says_not_found("No such file or directory"));
    }
}
