//! `apt-ostree db`: the Debian packages recorded in commits.

use anyhow::Result;
use clap::Subcommand;

use super::transaction::print_diff;
use super::Client;
use crate::protocol::sysroot::{ErrorKind, ListPackages_Reply, VarlinkClientInterface};

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// List the packages of commits (default: the booted, else the default deployment).
    List {
        /// Revisions (a checksum or unique prefix, a ref, or a deployment index)
        /// and package names to show (a prefix, or a pattern with * and ?), in
        /// any order, as rpm-ostree takes them.
        #[arg(value_name = "REVISION|PACKAGE")]
        args: Vec<String>,
    },
    /// Show the package changes between two commits (default: booted -> default).
    Diff {
        /// The older commit (a checksum or unique prefix, a ref, or a deployment index).
        from: Option<String>,
        /// The newer commit.
        to: Option<String>,
    },
    /// Show the version of commits and of their dpkg databases.
    Version {
        /// Revisions (default: the booted, else the default deployment).
        revisions: Vec<String>,
    },
}

/// `*` and `?` patterns; anything else matches as a prefix.
fn matches(pattern: &str, name: &str) -> bool {
    if pattern.contains(['*', '?']) {
        crate::fsutil::glob_matches(pattern, name)
    } else {
        name.starts_with(pattern)
    }
}

/// The replies for `args` that name revisions, and the rest as package patterns.
fn revisions_and_patterns(
    client: &Client,
    args: Vec<String>,
) -> Result<(Vec<ListPackages_Reply>, Vec<String>)> {
    let mut api = client.sysroot();
    let mut replies = Vec::new();
    let mut patterns = Vec::new();
    for arg in args {
        match api.list_packages(Some(arg.clone())).call() {
            Ok(reply) => replies.push(reply),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::RevisionNotFound(_) | ErrorKind::InvalidRefspec(_)
                ) =>
            {
                patterns.push(arg)
            }
            Err(e) => return Err(e.into()),
        }
    }
    if replies.is_empty() {
        replies.push(api.list_packages(None).call()?);
    }
    Ok((replies, patterns))
}

/// `name version architecture`, aligned.
fn print_packages<'a>(packages: impl Iterator<Item = &'a crate::protocol::sysroot::Package>) {
    let packages: Vec<_> = packages.collect();
    let name = packages.iter().map(|p| p.name.len()).max().unwrap_or(0);
    let version = packages.iter().map(|p| p.version.len()).max().unwrap_or(0);
    for p in packages {
        println!(
            "  {:name$}  {:version$}  {}",
            p.name, p.version, p.architecture
        );
    }
}

pub fn run(client: &Client, command: DbCommand) -> Result<u8> {
    let mut api = client.sysroot();
    match command {
        DbCommand::List { args } => {
            let (replies, patterns) = revisions_and_patterns(client, args)?;
            for reply in &replies {
                println!("ostree commit: {}", reply.checksum);
                print_packages(reply.packages.iter().filter(|p| {
                    patterns.is_empty() || patterns.iter().any(|x| matches(x, &p.name))
                }));
            }
        }
        DbCommand::Diff { from, to } => {
            let reply = api.diff_packages(from, to).call()?;
            println!("ostree diff commit from: {}", reply.fromChecksum);
            println!("ostree diff commit to:   {}", reply.toChecksum);
            let d = &reply.diff;
            if d.added.is_empty()
                && d.removed.is_empty()
                && d.upgraded.is_empty()
                && d.downgraded.is_empty()
            {
                println!("No package changes");
            } else {
                print_diff(d);
            }
        }
        DbCommand::Version { revisions } => {
            let (replies, unknown) = revisions_and_patterns(client, revisions)?;
            if let Some(r) = unknown.first() {
                anyhow::bail!("revision {r:?} not found");
            }
            for reply in &replies {
                let dpkg = reply
                    .packages
                    .iter()
                    .find(|p| p.name == "dpkg")
                    .map_or("no dpkg".to_string(), |p| format!("dpkg {}", p.version));
                println!(
                    "ostree commit: {} ({})",
                    reply.checksum,
                    reply.version.as_deref().unwrap_or("no version")
                );
                println!("  dpkg database: {} packages, {dpkg}", reply.packages.len());
            }
        }
    }
    Ok(0)
}

/// `apt-ostree search WORDS`: as `apt search` prints it.
pub fn search(client: &Client, words: Vec<String>, json: bool) -> Result<u8> {
    let reply = client.sysroot().search(words).call()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply.packages)?);
        return Ok(0);
    }
    for p in &reply.packages {
        println!(
            "{}/{} {}{}",
            p.name,
            p.version,
            p.architecture,
            if p.installed { " [installed]" } else { "" }
        );
        println!("  {}\n", p.summary);
    }
    if reply.packages.is_empty() {
        eprintln!("No package matches.");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns_are_prefixes_or_globs() {
        assert!(matches("lib", "libc6"));
        assert!(!matches("libc7", "libc6"));
        assert!(matches("lib*6", "libc6"));
        assert!(matches("*bash*", "bash-completion"));
        assert!(matches("l?bc6", "libc6"));
        assert!(!matches("l?bc", "libc6"));
        assert!(!matches("*x", "libc6"));
    }
}
