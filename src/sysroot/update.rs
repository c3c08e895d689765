//! Moving to another base commit: upgrade, rebase, deploy, refresh-md.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::pull::{pull, PullRequest};
use super::refspec::Refspec;
use super::Sysroot;
use crate::dpkg;
use crate::error::Error;
use crate::origin::Origin;
use crate::outcome::{Outcome, UpdateInfo};
use crate::progress::Sink;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpgradeOptions {
    pub check: bool,
    pub preview: bool,
    pub download_only: bool,
    pub allow_downgrade: bool,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn is_full_checksum(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Where a layered commit's base comes from: the commit itself if unlayered.
fn base_of(info: &super::CommitInfo) -> String {
    info.base_checksum
        .clone()
        .unwrap_or_else(|| info.checksum.clone())
}

impl Sysroot {
    /// apt-ostree's private state for this sysroot (ostree reserves
    /// `repo/extensions/` for tools built on it).
    pub fn state_dir(&self) -> PathBuf {
        self.path.join("ostree/repo/extensions/apt-ostree")
    }

    fn cached_update_path(&self) -> PathBuf {
        self.state_dir().join("cached-update.json")
    }

    /// The update last found by a check, if it is still newer than the default deployment.
    pub fn cached_update(&mut self) -> Option<UpdateInfo> {
        let text = std::fs::read_to_string(self.cached_update_path()).ok()?;
        let update: UpdateInfo = serde_json::from_str(&text).ok()?;
        let default = self.inner.deployments().into_iter().next()?;
        let info = self.commit_info(&default.csum()).ok()?;
        (base_of(&info) != update.checksum && update.timestamp >= info.timestamp).then_some(update)
    }

    fn store_cached_update(&self, update: &UpdateInfo) -> Result<()> {
        let dir = self.state_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("Creating {}", dir.display()))?;
        let tmp = dir.join(".cached-update.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(update)?)?;
        std::fs::rename(&tmp, self.cached_update_path()).context("Storing the cached update")
    }

    pub fn clear_cached_update(&self) {
        let _ = std::fs::remove_file(self.cached_update_path());
    }

    /// Pull `commit` (or the head) of `refspec`; return the commit's checksum.
    fn fetch(
        &self,
        sink: &Sink,
        refspec: &Refspec,
        commit: Option<&str>,
        metadata_only: bool,
    ) -> Result<String> {
        let repo = self.repo();
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
    fn history(&mut self, refspec: &str) -> Vec<super::CommitInfo> {
        let mut next = self
            .repo()
            .resolve_rev(refspec, true)
            .ok()
            .flatten()
            .map(|c| c.to_string());
        let mut commits = Vec::new();
        while let Some(checksum) = next {
            let Ok(info) = self.commit_info(&checksum) else {
                break;
            };
            next = info.parent.clone();
            commits.push(info);
        }
        commits
    }

    /// Find the commit of `refspec`'s history whose version is `version`.
    fn find_version(&mut self, sink: &Sink, refspec: &Refspec, version: &str) -> Result<String> {
        let repo = self.repo();
        if let Some(remote) = &refspec.remote {
            pull(
                &repo,
                &PullRequest {
                    remote,
                    branch: &refspec.branch,
                    commit: None,
                    metadata_only: true,
                    depth: -1,
                },
                sink,
            )?;
        }
        if let Some(found) = self
            .history(&refspec.to_string())
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

    /// Refuse to go back in time unless asked to.
    fn check_downgrade(&mut self, current: &str, target: &str, allow: bool) -> Result<()> {
        if allow {
            return Ok(());
        }
        let (cur, tgt) = (self.commit_info(current)?, self.commit_info(target)?);
        if tgt.timestamp < cur.timestamp {
            return Err(Error::DowngradeRefused {
                current: cur.version.unwrap_or(cur.checksum),
                target: tgt.version.unwrap_or(tgt.checksum),
            }
            .into());
        }
        Ok(())
    }

    fn update_info(&mut self, refspec: &Refspec, checksum: &str) -> Result<UpdateInfo> {
        let info = self.commit_info(checksum)?;
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
    fn diff_from_default_base(&mut self, commit: &str) -> Result<dpkg::PackageDiff> {
        let default = self.default_deployment()?;
        let base = base_of(&self.commit_info(&default.csum())?);
        Ok(dpkg::diff(&self.packages(&base)?, &self.packages(commit)?))
    }

    /// Deploy base commit `base` with `origin`, re-applying layered packages.
    pub(super) fn deploy_base(
        &mut self,
        sink: &Sink,
        base: &str,
        origin: &Origin,
    ) -> Result<Outcome> {
        let before = self
            .inner
            .deployments()
            .into_iter()
            .next()
            .map(|d| d.csum().to_string());
        let commit = if origin.is_layered() {
            crate::layering::build(self, sink, base, origin)?.commit
        } else {
            base.to_string()
        };
        let deployment = self.deploy_commit(sink, &commit, origin, None)?;
        self.prune_base_refs()?;
        let diff = match before {
            Some(b) => Some(dpkg::diff(
                &self.packages(&b)?,
                &self.packages(&deployment.checksum)?,
            )),
            None => None,
        };
        let staged = deployment.staged;
        Ok(Outcome {
            changed: true,
            message: format!(
                "{} {} ({})",
                if staged { "Staged" } else { "Deployed" },
                deployment.version.as_deref().unwrap_or("commit"),
                deployment.checksum
            ),
            // Only a running system reboots into the change.
            reboot_required: self.is_booted(),
            deployment: Some(deployment),
            diff,
            update: None,
        })
    }

    /// `upgrade`: fetch the origin's newest commit and deploy it.
    pub fn upgrade(&mut self, sink: &Sink, opts: &UpgradeOptions) -> Result<Outcome> {
        let (merge, origin) = self.merge_origin()?;
        let refspec = Refspec::parse(&origin.refspec)?;
        let current_base = base_of(&self.commit_info(&merge.csum())?);
        let metadata_only = (opts.check || opts.preview) && !opts.download_only;
        let head = self.fetch(sink, &refspec, None, metadata_only)?;
        let pinned = origin.override_commit.is_some();
        if head == current_base && !pinned {
            self.clear_cached_update();
            return Ok(Outcome::unchanged("No upgrade available."));
        }
        self.check_downgrade(&current_base, &head, opts.allow_downgrade)?;
        let mut update = self.update_info(&refspec, &head)?;
        if opts.check || opts.preview {
            if opts.preview {
                // Only the dpkg database of the new commit is needed for the diff.
                if let Some(remote) = &refspec.remote {
                    let repo = self.repo();
                    super::pull::pull_subdir(
                        &repo,
                        remote,
                        &refspec.branch,
                        &head,
                        dpkg::DATABASE_DIR,
                        sink,
                    )?;
                }
                update.diff = Some(self.diff_from_default_base(&head)?);
            }
            self.store_cached_update(&update)?;
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
            self.store_cached_update(&update)?;
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
        let outcome = self.deploy_base(sink, &head, &origin)?;
        self.clear_cached_update();
        Ok(outcome)
    }

    /// `rebase`: switch the origin to another refspec and deploy it.
    pub fn rebase(
        &mut self,
        sink: &Sink,
        refspec: &str,
        revision: Option<&str>,
    ) -> Result<Outcome> {
        let (_, origin) = self.merge_origin()?;
        let current = Refspec::parse(&origin.refspec)?;
        let target = Refspec::parse(refspec)?.or_branch_of(&current);
        let commit = match revision {
            None => self.fetch(sink, &target, None, false)?,
            Some(r) if is_full_checksum(r) => self.fetch(sink, &target, Some(r), false)?,
            Some(version) => {
                let c = self.find_version(sink, &target, version)?;
                self.fetch(sink, &target, Some(&c), false)?
            }
        };
        let mut origin = origin;
        origin.refspec = target.to_string();
        origin.override_commit = revision.map(|_| commit.clone());
        let mut outcome = self.deploy_base(sink, &commit, &origin)?;
        outcome.message = format!("Rebased to {target}: {}", outcome.message);
        Ok(outcome)
    }

    /// `deploy`: a version or checksum of the current ref, pinned in the origin.
    pub fn deploy_revision(
        &mut self,
        sink: &Sink,
        revision: &str,
        allow_downgrade: bool,
    ) -> Result<Outcome> {
        if revision.is_empty()
            || revision
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(Error::RevisionNotFound {
                revision: revision.to_string(),
                reason: "not a version or checksum".into(),
            }
            .into());
        }
        let (merge, origin) = self.merge_origin()?;
        let refspec = Refspec::parse(&origin.refspec)?;
        let current_base = base_of(&self.commit_info(&merge.csum())?);
        let local = self.repo().resolve_rev(revision, true).ok().flatten();
        let commit = if is_full_checksum(revision) {
            self.fetch(sink, &refspec, Some(revision), false).map_err(
                |e| match Error::classify(e) {
                    Error::FetchFailed { reason, .. } => Error::RevisionNotFound {
                        revision: revision.to_string(),
                        reason,
                    }
                    .into(),
                    other => anyhow::Error::from(other),
                },
            )?
        } else if let Some(c) =
            local.filter(|_| revision.len() >= 6 && revision.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            c.to_string()
        } else {
            let c = self.find_version(sink, &refspec, revision)?;
            self.fetch(sink, &refspec, Some(&c), false)?
        };
        if commit == current_base {
            return Ok(Outcome::unchanged(format!(
                "{revision} is already deployed"
            )));
        }
        self.check_downgrade(&current_base, &commit, allow_downgrade)?;
        let mut origin = origin;
        origin.override_commit = Some(commit.clone());
        self.deploy_base(sink, &commit, &origin)
    }

    /// `refresh-md`: update what we know of the origin's remote and the
    /// deployment's apt sources (the lists only when stale, unless `force`).
    pub fn refresh_metadata(&mut self, sink: &Sink, force: bool) -> Result<Outcome> {
        let (merge, origin) = self.merge_origin()?;
        let refspec = Refspec::parse(&origin.refspec)?;
        let current_base = base_of(&self.commit_info(&merge.csum())?);
        crate::layering::refresh_lists(self, sink, &current_base, force)?;
        let head = self.fetch(sink, &refspec, None, true)?;
        let info = self.commit_info(&head)?;
        Ok(Outcome {
            changed: true,
            message: format!(
                "{refspec} is at {} ({head})",
                info.version.as_deref().unwrap_or("an unversioned commit")
            ),
            ..Default::default()
        })
    }
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

impl Sysroot {
    /// The versions of the default deployment's ref known locally, newest first.
    pub fn versions(&mut self) -> Result<Vec<ImageVersion>> {
        self.reload(false)?;
        let default = self.default_deployment()?;
        let origin = Sysroot::origin_of(&default)?;
        let current = self.commit_info(&default.csum())?;
        let current_base = base_of(&current);
        let mut installed = std::collections::BTreeSet::new();
        for d in self.inner.deployments() {
            installed.insert(base_of(&self.commit_info(&d.csum())?));
        }
        let mut history = self.history(&origin.refspec);
        if history.is_empty() {
            // A local origin without its ref any more: the base itself.
            history = self.history(&current_base);
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
}
