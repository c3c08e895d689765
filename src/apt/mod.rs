//! The apt engine: resolving and fetching Debian packages with libapt-pkg.
//!
//! apt runs against a private configuration for one deployment: the
//! deployment's own apt sources (`/etc/apt`), the dpkg status of the base
//! commit being layered on, and apt-ostree's own lists and archive cache (so a
//! re-layering after an upgrade downloads nothing it already has). It never
//! touches the host's apt state. libapt's configuration is process-global, so
//! one user at a time: a transaction, or a search ([`lock`]).

mod names;
mod resolve;
mod search;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rust_apt::config::Config;
use rust_apt::progress::{AcquireProgress, DynAcquireProgress};
use rust_apt::{new_cache, Cache};

pub use names::{validate_package_name, verify_deb};
use resolve::{
    base_packages, dependency_order, explain_broken, plan_of_changes, requested_packages,
};
pub use search::{search_word, Found};

use crate::error::Error;
use crate::progress::{Event, Sink};

/// libapt's configuration and caches are the process's: held by each use
/// (a transaction's resolve and fetch, a search from the daemon's reader).
fn lock() -> std::sync::MutexGuard<'static, ()> {
    static APT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    APT.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where apt finds its inputs and keeps its state, for one layering run.
pub struct AptRoot {
    /// The deployment's apt configuration directory (its `/etc/apt`).
    pub etc_apt: PathBuf,
    /// dpkg status file of the base commit.
    pub status: PathBuf,
    /// Persistent state: package lists, archive cache.
    pub state: PathBuf,
}

/// What to do with packages.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub install: Vec<String>,
    /// Local .deb files (already validated).
    pub local: Vec<PathBuf>,
    /// Base packages to remove.
    pub remove: Vec<String>,
    /// Base packages to replace with the candidate from the sources.
    pub replace: Vec<String>,
}

/// Where a planned package comes from (not to be confused with a
/// deployment's origin file, [`crate::origin::Origin`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageSource {
    /// Fetched from an apt source; the URI it comes from.
    Repository(String),
    /// A local .deb file.
    Local(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// True when the base has no version of it (layered), false when it replaces one.
    pub new: bool,
    pub source: PackageSource,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub install: Vec<Planned>,
    pub remove: Vec<String>,
}

/// The packages whose marks changed, by name (for a stable plan).
fn changed_packages(cache: &Cache) -> Vec<rust_apt::Package<'_>> {
    let mut changes: Vec<_> = cache.get_changes(false).collect();
    changes.sort_by_cached_key(|p| p.name().to_string());
    changes
}

/// Streams libapt's download progress into the transaction.
struct SinkProgress {
    sink: Sink,
}

impl DynAcquireProgress for SinkProgress {
    fn pulse_interval(&self) -> usize {
        500_000
    }
    fn hit(&mut self, _item: &rust_apt::raw::ItemDesc) {}
    fn fetch(&mut self, item: &rust_apt::raw::ItemDesc) {
        self.sink.log(format!("Get: {}", item.description()));
    }
    // apt probes for files that may not exist (InRelease of a flat
    // repository); real failures come back as the update's error.
    fn fail(&mut self, _item: &rust_apt::raw::ItemDesc) {}
    fn pulse(&mut self, status: &rust_apt::raw::AcqTextStatus, _owner: &rust_apt::raw::PkgAcquire) {
        self.sink.emit(Event::Download {
            bytes_done: status.current_bytes(),
            bytes_total: Some(status.total_bytes()).filter(|t| *t > 0),
            bytes_per_second: status.current_cps(),
        });
    }
    fn done(&mut self, _item: &rust_apt::raw::ItemDesc) {}
    fn start(&mut self) {}
    fn stop(&mut self, status: &rust_apt::raw::AcqTextStatus) {
        if status.fetched_bytes() > 0 {
            self.sink.emit(Event::Download {
                bytes_done: status.fetched_bytes(),
                bytes_total: Some(status.fetched_bytes()),
                bytes_per_second: status.current_cps(),
            });
        }
    }
}

fn apt_error(context: &str, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{context}: {}", e.to_string().trim())
}

impl AptRoot {
    fn lists(&self) -> PathBuf {
        self.state.join("lists")
    }

    /// Where downloaded .debs are kept between transactions.
    pub fn archives(&self) -> PathBuf {
        self.state.join("cache/archives")
    }

    /// Point libapt's global configuration at this root.
    fn configure(&self) -> Result<()> {
        for dir in [
            self.lists().join("partial"),
            self.archives().join("partial"),
        ] {
            std::fs::create_dir_all(&dir).with_context(|| format!("Creating {}", dir.display()))?;
        }
        let config = Config::new_clear();
        let path = |p: &Path| p.display().to_string();
        config.set("Dir::Etc", &format!("{}/", path(&self.etc_apt)));
        config.set("Dir::Etc::sourcelist", "sources.list");
        config.set("Dir::Etc::sourceparts", "sources.list.d");
        config.set("Dir::Etc::preferences", "preferences");
        config.set("Dir::Etc::preferencesparts", "preferences.d");
        config.set("Dir::Etc::trusted", "trusted.gpg");
        config.set("Dir::Etc::trustedparts", "trusted.gpg.d");
        config.set("Dir::State", &format!("{}/", path(&self.state)));
        config.set("Dir::State::lists", &format!("{}/", path(&self.lists())));
        config.set("Dir::State::status", &path(&self.status));
        config.set(
            "Dir::State::extended_states",
            &path(&self.state.join("extended_states")),
        );
        config.set(
            "Dir::Cache",
            &format!("{}/", path(&self.state.join("cache"))),
        );
        config.set(
            "Dir::Cache::archives",
            &format!("{}/", path(&self.archives())),
        );
        // apt's binary caches, checked by apt against the size and mtime of
        // every list and of the status file: the source cache (the lists
        // alone, the expensive part) survives a change of base.
        config.set("Dir::Cache::pkgcache", "pkgcache.bin");
        config.set("Dir::Cache::srcpkgcache", "srcpkgcache.bin");
        config.set("Dir::Log", &format!("{}/", path(&self.state.join("log"))));
        config.set("Acquire::Retries", "1");
        config.set("Acquire::http::Timeout", "30");
        config.set("Debug::NoLocking", "true");
        Ok(())
    }

    /// Fetch the package lists from the deployment's sources.
    fn update(&self, sink: &Sink) -> Result<()> {
        self.configure()?;
        sink.task_begin("Updating package lists");
        let cache = new_cache!().map_err(|e| apt_error("Reading the apt sources", e))?;
        let mut progress = AcquireProgress::new(SinkProgress { sink: sink.clone() });
        cache
            .update(&mut progress)
            .map_err(|e| Error::FetchFailed {
                remote: "apt sources".into(),
                reason: e.to_string().trim().to_string(),
            })?;
        sink.task_end("Updating package lists");
        Ok(())
    }

    /// How long package lists are trusted before they are fetched again
    /// (`refresh-md --force` always fetches).
    const LISTS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

    /// A fingerprint of the apt sources, so that editing them invalidates the lists.
    fn sources_fingerprint(&self) -> String {
        let mut text = String::new();
        let mut files = vec![self.etc_apt.join("sources.list")];
        for dir in ["sources.list.d", "preferences.d"] {
            if let Ok(entries) = std::fs::read_dir(self.etc_apt.join(dir)) {
                let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
                paths.sort();
                files.extend(paths);
            }
        }
        for f in files {
            if let Ok(content) = std::fs::read_to_string(&f) {
                // Relative names: every deployment has its own copy of /etc/apt.
                let name = f.strip_prefix(&self.etc_apt).unwrap_or(&f);
                text.push_str(&format!("{}\n{content}\n", name.display()));
            }
        }
        ostree::glib::compute_checksum_for_string(ostree::glib::ChecksumType::Sha256, &text)
            .map(|s| s.to_string())
            .unwrap_or_default()
    }

    /// Refresh the lists unless they are recent and the sources unchanged
    /// (always, with `force`).
    pub fn refresh(&self, sink: &Sink, force: bool) -> Result<()> {
        let stamp = self.state.join("lists.stamp");
        let fingerprint = self.sources_fingerprint();
        let fresh = !force
            && std::fs::read_to_string(&stamp).is_ok_and(|s| s == fingerprint)
            && std::fs::metadata(&stamp)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < Self::LISTS_MAX_AGE));
        if fresh {
            return Ok(());
        }
        let _apt = lock();
        self.update(sink)?;
        std::fs::write(&stamp, fingerprint).context("Writing the lists stamp")
    }

    fn open(&self, local: &[PathBuf]) -> Result<Cache> {
        self.configure()?;
        let files: Vec<String> = local.iter().map(|p| p.display().to_string()).collect();
        Cache::new(&files).map_err(|e| apt_error("Opening the package cache", e))
    }

    /// Resolve `request` against the base's package set, without downloading.
    pub fn plan(&self, request: &Request) -> Result<Plan> {
        let _apt = lock();
        let cache = self.open(&request.local)?;
        self.resolve(&cache, request)
    }

    /// Resolve `request` and download what it installs from repositories;
    /// return the plan and every .deb to install, in order.
    ///
    /// `before_fetch` runs between the two and may block: libapt's fetcher
    /// switches the whole process's effective uid to its sandbox user for a
    /// moment (to check what that user can reach), so the caller must not be
    /// writing files as root on another thread while it runs.
    pub fn plan_and_fetch(
        &self,
        request: &Request,
        sink: &Sink,
        before_fetch: impl FnOnce(),
    ) -> Result<(Plan, Vec<PathBuf>)> {
        let _apt = lock();
        let cache = self.open(&request.local)?;
        let plan = sink.task("Resolving dependencies", || self.resolve(&cache, request));
        before_fetch();
        let plan = plan?;
        let debs = self.fetch(&cache, &plan, sink)?;
        Ok((plan, debs))
    }

    fn resolve(&self, cache: &Cache, request: &Request) -> Result<Plan> {
        let (wanted, local) = requested_packages(cache, request)?;
        let replaced = base_packages(cache, &request.replace)?;
        let removed = base_packages(cache, &request.remove)?;
        for pkg in &removed {
            pkg.mark_delete(true);
            pkg.protect();
        }
        for pkg in wanted.iter().chain(&replaced) {
            pkg.mark_install(true, true);
            pkg.protect();
        }
        // Marking installs dependencies already; the problem resolver is
        // only needed (and only costs time) when that left something broken.
        // Each scan for changes walks the whole archive: one, unless the
        // resolver ran and changed the marks.
        let mut changes = changed_packages(cache);
        let broken = changes.iter().any(|p| p.is_inst_broken());
        let resolved = if broken {
            let resolved = cache.resolve(false);
            changes = changed_packages(cache);
            resolved
        } else {
            Ok(())
        };
        // The resolver may "succeed" by dropping a request it cannot satisfy.
        let dropped = wanted.iter().any(|p| !p.marked_install());
        if resolved.is_err() || dropped {
            let err = resolved.err().map(|e| e.to_string()).unwrap_or_default();
            return Err(Error::DependencyProblem {
                explanation: explain_broken(&wanted, &err),
            }
            .into());
        }
        let mut plan = plan_of_changes(changes, request, &local)?;
        dependency_order(cache, &mut plan.install);
        Ok(plan)
    }

    /// Download what the resolution in `cache` marked; return every .deb of `plan`.
    fn fetch(&self, cache: &Cache, plan: &Plan, sink: &Sink) -> Result<Vec<PathBuf>> {
        let needs_download = plan
            .install
            .iter()
            .any(|p| matches!(&p.source, PackageSource::Repository(u) if !u.starts_with("file:")));
        if needs_download {
            sink.task_begin("Downloading packages");
            let mut progress = AcquireProgress::new(SinkProgress { sink: sink.clone() });
            cache
                .get_archives(&mut progress)
                .map_err(|e| Error::FetchFailed {
                    remote: "apt sources".into(),
                    reason: e.what().trim().to_string(),
                })?;
            sink.task_end("Downloading packages");
        }
        plan.install
            .iter()
            .map(|p| match &p.source {
                PackageSource::Local(path) => Ok(path.clone()),
                PackageSource::Repository(uri) if uri.starts_with("file:") => {
                    Ok(file_uri_path(uri))
                }
                PackageSource::Repository(uri) => {
                    let path = self.archives().join(archive_file_name(p, uri));
                    if path.exists() {
                        Ok(path)
                    } else {
                        Err(anyhow::anyhow!("{} was not downloaded", path.display()))
                    }
                }
            })
            .collect()
    }
}

/// The file a `file:` URI from apt names. apt hands its archive URIs over
/// already decoded (a source written `file:/srv/my%20repo` comes back as
/// `file:/srv/my repo/...`): decoding again would turn a directory's
/// literal `%41` into `A`.
fn file_uri_path(uri: &str) -> PathBuf {
    let path = uri.trim_start_matches("file:");
    PathBuf::from(format!("/{}", path.trim_start_matches('/')))
}

/// apt's QuoteString: the characters of `bad`, '%', space, controls and
/// non-ASCII bytes as %xx.
fn apt_quote(text: &str, bad: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if bad.as_bytes().contains(&byte) || byte == b'%' || byte <= 0x20 || byte >= 0x7f {
            out.push_str(&format!("%{byte:02x}"));
        } else {
            out.push(byte as char);
        }
    }
    out
}

/// The name under which apt's acquire system stores a downloaded archive
/// (pkgAcqArchive): NAME_VERSION_ARCH.EXT, each part quoted by QuoteString,
/// the extension that of the archive's file in the repository.
fn archive_file_name(planned: &Planned, uri: &str) -> String {
    let file = uri.rsplit('/').next().unwrap_or(uri);
    let extension = file.rsplit_once('.').map_or("deb", |(_, e)| e);
    format!(
        "{}_{}_{}.{extension}",
        apt_quote(&planned.name, "_:"),
        apt_quote(&planned.version, "_:"),
        apt_quote(&planned.architecture, "_:."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_are_apts() {
        let planned = |name: &str, version: &str| Planned {
            name: name.into(),
            version: version.into(),
            architecture: "amd64".into(),
            new: true,
            source: PackageSource::Repository(String::new()),
        };
        let uri = "http://deb.debian.org/debian/pool/main/h/hello/hello_2.10-3_amd64.deb";
        assert_eq!(
            archive_file_name(&planned("hello", "2.10-3"), uri),
            "hello_2.10-3_amd64.deb"
        );
        assert_eq!(
            archive_file_name(&planned("bash", "1:5.2-1+b1~x"), uri),
            "bash_1%3a5.2-1+b1~x_amd64.deb"
        );
    }
}
