//! `apt-ostree status`: the deployments, as rpm-ostree users know them.

use anyhow::Result;
use clap::Args;

use super::Client;
use crate::protocol::sysroot::{Deployment, GetStatus_Reply, VarlinkClientInterface};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the GetStatus reply as JSON, exactly as the daemon sent it.
    #[arg(long)]
    pub json: bool,
    /// Only the booted deployment.
    #[arg(short = 'b', long)]
    pub booted: bool,
    /// More detail: ids, serials, base commits, kernel arguments.
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

pub fn run(client: &Client, args: &StatusArgs) -> Result<u8> {
    let mut reply = client.sysroot().get_status().call()?;
    if args.booted {
        reply.deployments.retain(|d| d.booted);
    }
    if args.json {
        let mut json = serde_json::to_value(&reply)?;
        crate::protocol::omit_absent(&mut json);
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", render(&reply, args.verbose));
    }
    Ok(0)
}

pub use crate::error::format_time;

fn field(out: &mut String, key: &str, value: &str) {
    out.push_str(&format!("{key:>25}: {value}\n"));
}

fn list_field(out: &mut String, key: &str, values: &[String]) {
    if !values.is_empty() {
        field(out, key, &values.join(" "));
    }
}

fn render_deployment(out: &mut String, d: &Deployment, verbose: bool) {
    let marker = if d.booted { "●" } else { " " };
    let origin = d
        .refspec
        .clone()
        .or_else(|| d.containerImageReference.clone())
        .unwrap_or_else(|| format!("{}:(unknown origin)", d.osname));
    let mut tags = Vec::new();
    for (on, tag) in [
        (d.staged, "staged"),
        (d.default && !d.booted, "default"),
        (d.rollback, "rollback"),
        (d.pinned, "pinned"),
    ] {
        if on {
            tags.push(format!("({tag})"));
        }
    }
    out.push_str(&format!("{marker} {origin} {}\n", tags.join(" ")).replace(" \n", "\n"));
    let version = match &d.version {
        Some(v) => format!("{v} ({})", format_time(d.timestamp)),
        None => format_time(d.timestamp),
    };
    field(
        out,
        if d.version.is_some() {
            "Version"
        } else {
            "Timestamp"
        },
        &version,
    );
    match &d.baseChecksum {
        Some(base) => {
            field(out, "BaseCommit", base);
            field(out, "Commit", &d.checksum);
        }
        None => field(out, "Commit", &d.checksum),
    }
    if let Some(digest) = &d.imageDigest {
        field(out, "Digest", digest);
    }
    if let Some(p) = &d.pinnedRevision {
        field(out, "PinnedRevision", p);
    }
    if verbose {
        field(out, "StateRoot", &d.osname);
        field(out, "Deployment", &d.id);
        field(out, "Serial", &d.serial.to_string());
        if d.unlocked != "none" {
            field(out, "Unlocked", &d.unlocked);
        }
        list_field(out, "KernelArguments", &d.kernelArguments);
    } else if d.unlocked != "none" {
        field(out, "Unlocked", &d.unlocked);
    }
    if let Some(commit) = &d.liveCommit {
        field(out, "LiveCommit", commit);
        list_field(
            out,
            "LivePackages",
            d.livePackages.as_deref().unwrap_or_default(),
        );
    }
    match d.bootAssessment.as_deref() {
        Some("failed") => field(
            out,
            "Boot",
            &format!(
                "failed: {}; rolled back on {}; \
                 `apt-ostree cleanup --boot-failures` forgets it",
                match d.bootFailure.as_deref() {
                    Some("kernel-not-started") => {
                        "its kernel did not start (refused by Secure Boot, or unreadable)"
                    }
                    _ => "used up its tries",
                },
                format_time(d.bootFailedAt.unwrap_or(0))
            ),
        ),
        Some("unassessed") => field(
            out,
            "Boot",
            &format!(
                "on trial: {} more boots to reach boot-complete.target",
                d.bootTriesLeft.unwrap_or(0)
            ),
        ),
        Some(state) if verbose => field(out, "Boot", state),
        _ => {}
    }
    list_field(out, "RemovedBasePackages", &d.removedBasePackages);
    list_field(out, "ReplacedBasePackages", &d.replacedBasePackages);
    list_field(out, "LayeredPackages", &d.requestedPackages);
    if d.regenerateInitramfs {
        field(out, "Initramfs", "regenerate");
    }
    list_field(out, "LocalPackages", &d.requestedLocalPackages);
    if verbose {
        list_field(out, "InstalledPackages", &d.layeredPackages);
    }
}

pub fn render(status: &GetStatus_Reply, verbose: bool) -> String {
    let mut out = String::new();
    match &status.transaction {
        Some(t) => out.push_str(&format!(
            "State: busy\nTransaction: {} ({}){}\n",
            t.title,
            t.id,
            if t.cancelling { " cancelling" } else { "" }
        )),
        None => out.push_str("State: idle\n"),
    }
    if let Some(u) = &status.cachedUpdate {
        out.push_str(&format!(
            "AvailableUpdate: {} ({}, {})\n",
            u.version.as_deref().unwrap_or(&u.checksum),
            u.checksum,
            format_time(u.timestamp)
        ));
    }
    if status.deployments.is_empty() {
        out.push_str("Deployments: none\n");
        return out;
    }
    out.push_str("Deployments:\n");
    for (i, d) in status.deployments.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        render_deployment(&mut out, d, verbose);
    }
    out
}
