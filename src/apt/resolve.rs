//! Resolution against a base: the packages a request names, the base's own
//! packages it removes or replaces, the plan of changes in dpkg's order, and
//! what to say when apt's resolver gives up.

use std::path::PathBuf;

use anyhow::Result;
use rust_apt::Cache;

use super::{names, PackageSource, Plan, Planned, Request};
use crate::error::Error;

/// Local .deb files with their package names.
type LocalDebs<'r> = Vec<(String, &'r PathBuf)>;

/// The packages `request` names (by name, NAME=VERSION or local file),
/// and each local file with its package name. Refused: names apt does not
/// know, packages the base has, and virtual packages with several
/// providers (apt-get asks the user to choose one; so do we).
pub(super) fn requested_packages<'a, 'r>(
    cache: &'a Cache,
    request: &'r Request,
) -> Result<(Vec<rust_apt::Package<'a>>, LocalDebs<'r>)> {
    let mut missing = Vec::new();
    let mut in_base = Vec::new();
    let mut wanted = Vec::new();
    for spec in &request.install {
        let (name, version) = match spec.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (spec.as_str(), None),
        };
        let Some(pkg) = cache.get(name) else {
            missing.push(spec.clone());
            continue;
        };
        if pkg.is_installed() {
            in_base.push(name.to_string());
            continue;
        }
        let pkg = if pkg.has_versions() {
            pkg
        } else {
            let mut providers: Vec<_> = pkg.provides().map(|p| p.package()).collect();
            providers.sort_by_cached_key(|p| p.fullname(true));
            providers.dedup_by_key(|p| p.fullname(true));
            match providers.len() {
                0 => {
                    missing.push(spec.clone());
                    continue;
                }
                1 => providers.remove(0),
                _ => {
                    return Err(Error::DependencyProblem {
                        explanation: format!(
                            "{name} is a virtual package provided by {}: name the one to install",
                            providers
                                .iter()
                                .map(|p| p.fullname(true))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }
                    .into())
                }
            }
        };
        if let Some(v) = version {
            match pkg.get_version(v) {
                Some(ver) => ver.set_candidate(),
                None => {
                    missing.push(spec.clone());
                    continue;
                }
            }
        }
        wanted.push(pkg);
    }
    // Each local file's package name, read once.
    let local: Vec<(String, &PathBuf)> = request
        .local
        .iter()
        .map(|path| Ok((names::deb_field(path, "Package")?, path)))
        .collect::<Result<_>>()?;
    for (name, path) in &local {
        match cache.get(name) {
            Some(pkg) => wanted.push(pkg),
            None => missing.push(path.display().to_string()),
        }
    }
    if !missing.is_empty() {
        return Err(Error::PackageNotFound { packages: missing }.into());
    }
    if !in_base.is_empty() {
        return Err(Error::PackageInBase { packages: in_base }.into());
    }
    Ok((wanted, local))
}

/// The base image's packages called `names`; any other name is refused.
pub(super) fn base_packages<'a>(
    cache: &'a Cache,
    names: &[String],
) -> Result<Vec<rust_apt::Package<'a>>> {
    names
        .iter()
        .map(|name| {
            cache.get(name).filter(|p| p.is_installed()).ok_or_else(|| {
                Error::PackageNotInBase {
                    packages: vec![name.clone()],
                }
                .into()
            })
        })
        .collect()
}

/// The plan for the marked `changes`. Refused: any
/// change to a base package that the request did not ask for.
pub(super) fn plan_of_changes(
    changes: Vec<rust_apt::Package>,
    request: &Request,
    local: &[(String, &PathBuf)],
) -> Result<Plan> {
    let mut plan = Plan::default();
    let mut unexpected = Vec::new();
    for pkg in &changes {
        let name = pkg.name().to_string();
        if pkg.marked_delete() {
            if request.remove.contains(&name) {
                plan.remove.push(name);
            } else {
                unexpected.push(format!("{name} would be removed"));
            }
            continue;
        }
        let Some(ver) = pkg.install_version() else {
            continue;
        };
        let new = !pkg.is_installed();
        if !new && !request.replace.contains(&name) {
            unexpected.push(format!(
                "{name} would change from {} to {} in the base image",
                pkg.installed()
                    .map(|v| v.version().to_string())
                    .unwrap_or_default(),
                ver.version()
            ));
            continue;
        }
        let source = match local.iter().find(|(n, _)| *n == name) {
            Some((_, path)) => PackageSource::Local((*path).clone()),
            None => PackageSource::Repository(ver.uris().next().ok_or_else(|| {
                Error::PackageNotFound {
                    packages: vec![format!("{name}={} (no download source)", ver.version())],
                }
            })?),
        };
        plan.install.push(Planned {
            name,
            version: ver.version().to_string(),
            architecture: ver.arch().to_string(),
            new,
            source,
        });
    }
    if !unexpected.is_empty() {
        return Err(Error::DependencyProblem {
            explanation: format!(
                "the request would change the base image beyond what was asked:\n  {}\n\
                 Use `apt-ostree override replace` or `override remove` for base packages.",
                unexpected.join("\n  ")
            ),
        }
        .into());
    }
    Ok(plan)
}

/// apt's resolver says only that it failed; say which dependencies of the
/// requested packages cannot be met, the way `apt install` does.
pub(super) fn explain_broken(wanted: &[rust_apt::Package], resolver_error: &str) -> String {
    let mut lines = Vec::new();
    for pkg in wanted {
        // After a failed resolution the depcache may have no candidate left:
        // explain with the newest version.
        let Some(ver) = pkg.candidate().or_else(|| pkg.versions().next()) else {
            continue;
        };
        for dep in ver.depends_map().values().flatten() {
            if !dep.first().is_critical() {
                continue;
            }
            let satisfiable = dep.iter().any(|d| !d.all_targets().is_empty());
            let broken = !satisfiable || dep.iter().all(|d| d.target_package().marked_delete());
            if broken || pkg.is_inst_broken() && !satisfiable {
                let what: Vec<String> = dep
                    .iter()
                    .map(|d| match (d.comp_type(), d.version()) {
                        (Some(op), Some(v)) => format!("{} ({op} {v})", d.name()),
                        _ => d.name().to_string(),
                    })
                    .collect();
                lines.push(format!(
                    " {} : {}: {} but it is not installable",
                    pkg.name(),
                    dep.dep_type().to_str(),
                    what.join(" | ")
                ));
            }
        }
        if let Some(conflicts) = ver.depends_map().get(&rust_apt::DepType::Conflicts) {
            for dep in conflicts {
                let other = dep.first().target_package();
                if other.marked_install() || other.is_installed() {
                    lines.push(format!(
                        " {} : Conflicts: {}",
                        pkg.name(),
                        dep.first().name()
                    ));
                }
            }
        }
    }
    let mut text = String::from("The following packages have unmet dependencies:\n");
    if lines.is_empty() {
        text.push_str(resolver_error.trim());
    } else {
        text.push_str(&lines.join("\n"));
    }
    text
}

/// Order packages so that each comes after the packages of the set it
/// depends on, as apt orders dpkg runs (trigger interests and maintainer
/// scripts see their dependencies unpacked first).
pub(super) fn dependency_order(cache: &Cache, plan: &mut Vec<Planned>) {
    let names: Vec<String> = plan.iter().map(|p| p.name.clone()).collect();
    let deps_of = |p: &Planned| -> Vec<String> {
        let Some(pkg) = cache.get(&p.name) else {
            return Vec::new();
        };
        let Some(ver) = pkg.get_version(&p.version) else {
            return Vec::new();
        };
        ver.depends_map()
            .iter()
            .filter(|(t, _)| {
                matches!(
                    t,
                    rust_apt::DepType::Depends | rust_apt::DepType::PreDepends
                )
            })
            .flat_map(|(_, deps)| {
                deps.iter()
                    .flat_map(|d| d.iter().map(|b| b.name().to_string()))
            })
            .filter(|n| names.contains(n))
            .collect()
    };
    let mut ordered: Vec<Planned> = Vec::new();
    let mut left: Vec<Planned> = std::mem::take(plan);
    while !left.is_empty() {
        let ready = left
            .iter()
            .position(|p| {
                deps_of(p)
                    .iter()
                    .all(|d| ordered.iter().any(|o| &o.name == d))
            })
            .unwrap_or(0); // a dependency cycle: dpkg copes, take the first
        ordered.push(left.remove(ready));
    }
    *plan = ordered;
}
