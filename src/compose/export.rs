//! `compose export`: an update a machine takes with no network at all, from
//! a directory or a mounted USB stick (`apt-ostree upgrade --from DIR`).
//!
//! The layout is `ostree create-usb`'s: an archive repository in
//! `DIR/.ostree/repo` holding the ref, its commit with every object, the
//! commit's signatures (detached metadata) and a summary. The collection ID
//! the commit is bound to becomes the repository's, so that its summary names
//! it. The machine pulls from it as from its remote, with the remote's
//! signature checks; nothing here is trusted.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use ostree::gio::prelude::*;
use ostree::{gio, glib};

/// Where an export keeps its repository, under the directory given.
pub const EXPORT_REPO: &str = ".ostree/repo";

#[derive(Debug)]
pub struct Exported {
    pub commit: String,
    pub version: Option<String>,
    pub signed: bool,
    pub repo: PathBuf,
}

/// Write `reference` of the repository at `repo` into `dir`.
pub fn export(repo: &Path, reference: &str, dir: &Path) -> Result<Exported> {
    let source = ostree::Repo::new_for_path(repo);
    source
        .open(gio::Cancellable::NONE)
        .with_context(|| format!("Opening the repository {}", repo.display()))?;
    let commit = source
        .resolve_rev(reference, true)
        .with_context(|| format!("Resolving {reference}"))?
        .ok_or_else(|| anyhow!("{reference}: no such ref in {}", repo.display()))?
        .to_string();
    let (variant, _) = source.load_commit(&commit)?;
    let metadata = glib::VariantDict::new(Some(&variant.child_value(0)));
    let version = metadata.lookup::<String>("version").ok().flatten();
    let collection = metadata
        .lookup::<String>("ostree.collection-binding")
        .ok()
        .flatten();
    let signed = crate::sysroot::is_signed(&source, &commit)?;

    if !dir.is_dir() {
        anyhow::bail!("{}: not a directory (mount the stick first)", dir.display());
    }
    let path = dir.join(EXPORT_REPO);
    std::fs::create_dir_all(&path).with_context(|| format!("Creating {}", path.display()))?;
    let dest = ostree::Repo::new_for_path(&path);
    if path.join("config").exists() {
        dest.open(gio::Cancellable::NONE)
            .with_context(|| format!("Opening {}", path.display()))?;
        // The summary names the collection of what the export holds now.
        if dest.collection_id().map(|c| c.to_string()) != collection {
            let config = dest.copy_config();
            match &collection {
                Some(id) => config.set_string("core", "collection-id", id),
                None => {
                    let _ = config.remove_key("core", "collection-id");
                }
            }
            dest.write_config(&config)?;
            dest.reload_config(gio::Cancellable::NONE)?;
        }
    } else {
        if let Some(id) = &collection {
            dest.set_collection_id(Some(id))?;
        }
        dest.create(ostree::RepoMode::Archive, gio::Cancellable::NONE)
            .with_context(|| format!("Creating a repository in {}", path.display()))?;
    }
    let options = glib::VariantDict::new(None);
    options.insert("refs", vec![commit.clone()]);
    let source_url = gio::File::for_path(std::fs::canonicalize(repo)?).uri();
    dest.pull_with_options(
        source_url.as_str(),
        &options.end(),
        None,
        gio::Cancellable::NONE,
    )
    .context("Copying the commit")?;
    // The pull copies the commit's signatures (detached metadata) with it.
    dest.set_ref_immediate(None, reference, Some(&commit), gio::Cancellable::NONE)?;
    dest.regenerate_summary(None, gio::Cancellable::NONE)
        .context("Writing the summary")?;
    // The stick may be pulled out the moment this returns.
    nix::unistd::sync();
    Ok(Exported {
        commit,
        version,
        signed,
        repo: path,
    })
}
