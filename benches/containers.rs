//! Container images: pulling and deploying a whole image against the stock
//! tools doing the same work, and the bytes an upgrade that changed one
//! package transfers against the bytes of the layers that changed.

use std::process::Command;
use std::time::Instant;

use crate::common::images::Registry;
use crate::common::*;
use crate::{ms, ratio_row, row, stats};

/// Encapsulate commit `rev` of `repo` into the registry as `name`; its digest.
fn encapsulate(repo: &std::path::Path, rev: &str, name: &str) -> String {
    images::encapsulate(repo, rev, &format!("registry:{name}"))
}

/// The floor of pulling an image: `skopeo copy` to an `oci:` directory,
/// `ostree commit --tree=tar=` of every layer in order, then the least
/// conversion libostree needs to deploy it (hard-link checkout, /etc to
/// /usr/etc, dpkg's database into /usr, commit with
/// --link-checkout-speedup), then `ostree admin deploy`.
fn pull_floor(s: &TestSysroot, image: &str) -> std::time::Duration {
    let work = s.path.join("ostree/repo/tmp/bench-image");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let t = Instant::now();
    let oci = work.join("oci");
    run(Command::new("skopeo")
        .args(["copy", "-q", &format!("docker://{image}")])
        .arg(format!("oci:{}:x", oci.display())));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| {
        oci.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let mut commit = s.repo_cmd();
    commit.args([
        "commit",
        "--branch",
        "bench/image",
        "--tar-autocreate-parents",
    ]);
    for layer in manifest["layers"].as_array().unwrap() {
        commit.arg(format!(
            "--tree=tar={}",
            blob(layer["digest"].as_str().unwrap()).display()
        ));
    }
    run(&mut commit);
    let tree = work.join("tree");
    run(s
        .repo_cmd()
        .args(["checkout", "-H", "bench/image"])
        .arg(&tree));
    std::fs::rename(tree.join("etc"), tree.join("usr/etc")).unwrap();
    std::fs::rename(
        tree.join("var/lib/dpkg"),
        tree.join("usr/share/dpkg/database"),
    )
    .unwrap();
    let deployable = stdout(
        s.repo_cmd()
            .args([
                "commit",
                "--link-checkout-speedup",
                "--branch",
                "bench/deployable",
            ])
            .arg(format!("--tree=dir={}", tree.display())),
    );
    run(ostree()
        .args(["admin", "deploy", "--os", OSNAME])
        .arg(format!("--sysroot={}", s.path.display()))
        .arg(deployable.trim()));
    let elapsed = t.elapsed();
    let _ = std::fs::remove_dir_all(&work);
    elapsed
}

pub fn bench() {
    let registry = Registry::start();
    let host = registry.host();
    let base = base_repo();

    // A whole image: the test image (12.2), encapsulated by package.
    let image = format!("{host}/bench/os:12.2");
    encapsulate(&base.path, &base.v2, &image);
    let rounds = 5;
    let (mut ours, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let s = TestSysroot::at_v1();
        let t = Instant::now();
        run(s
            .cli()
            .args(["rebase", &format!("ostree-unverified-registry:{image}")]));
        ours.push(t.elapsed());
        let s = TestSysroot::at_v1();
        floor.push(pull_floor(&s, &image));
    }
    let (ours, floor) = (stats(ours), stats(floor));
    row(
        "pull+deploy a whole image (median of 5)",
        &ms(ours.median),
        "skopeo copy + commit tars + deploy",
        &ms(floor.median),
    );
    ratio_row(&ours, &floor);

    // An upgrade in which one package changed: the test image with a
    // package layered on it, encapsulated the same way.
    let s = TestSysroot::at_v1();
    let apt = tempfile::tempdir().unwrap();
    debs::apt_repository(
        apt.path(),
        &[debs::Deb::new("bench-changed", "1.0")
            .file("/usr/share/bench-changed/data", &"x".repeat(200_000))],
    );
    let http = HttpServer::start(apt.path(), None);
    let old = format!("{host}/bench/upgrade:1");
    let new = format!("{host}/bench/upgrade:2");
    encapsulate(&base.path, &base.v1, &old);
    let root = s.deployment_dir(&s.deployments()[0].0, s.deployments()[0].1);
    std::fs::write(
        root.join("etc/apt/sources.list.d/bench.list"),
        format!("deb [trusted=yes] {}/ ./\n", http.url()),
    )
    .unwrap();
    run(s.cli().args(["install", "bench-changed"]));
    let layered = s.deployments()[0].0.clone();
    encapsulate(&s.repo(), &layered, &new);
    let old_layers = images::manifest_layers(&old);
    let new_manifest: serde_json::Value =
        serde_json::from_str(&stdout(Command::new("skopeo").args([
            "inspect",
            "--raw",
            &format!("docker://{new}"),
        ])))
        .unwrap();
    // (digest, size, what the layer holds) of the layers the new image does not share.
    let changed: Vec<(String, u64, String)> = new_manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            !old_layers
                .iter()
                .any(|o| o == l["digest"].as_str().unwrap())
        })
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_string(),
                l["size"].as_u64().unwrap(),
                l["annotations"]["org.aptostree.layer.content"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string(),
            )
        })
        .collect();

    let m = TestSysroot::at_v1();
    run(m
        .cli()
        .args(["rebase", &format!("ostree-unverified-registry:{old}")]));
    let before = registry.blob_transfers().len();
    // The machine follows :1; the new image is pushed under the same tag.
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        "--preserve-digests",
        &format!("docker://{new}"),
        &format!("docker://{old}"),
    ]));
    let t = Instant::now();
    run(m.cli().arg("upgrade"));
    let upgrade_time = t.elapsed();
    let transfers = registry.blob_transfers()[before..].to_vec();
    let fetched: u64 = transfers.iter().map(|(_, b)| b).sum();
    let layer_digests: Vec<&str> = new_manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    let config: u64 = transfers
        .iter()
        .filter(|(d, _)| !layer_digests.contains(&d.as_str()))
        .map(|(_, b)| b)
        .sum();
    let manifest = serde_json::to_vec(&new_manifest).unwrap().len() as u64;
    // The measure: the changed package's layer and dpkg's, with the manifest and config.
    let target: u64 = changed
        .iter()
        .filter(|(_, _, what)| what == "bench-changed" || what == "dpkg database")
        .map(|(_, size, _)| size)
        .sum::<u64>()
        + config
        + manifest;
    let names: Vec<String> = changed
        .iter()
        .map(|(_, size, what)| format!("{what} {size} B"))
        .collect();
    row(
        &format!(
            "upgrade, one package changed ({} of {} layers)",
            changed.len(),
            layer_digests.len()
        ),
        &format!("{} B", fetched + manifest),
        "its layer + dpkg's + manifest + config",
        &format!("{target} B"),
    );
    println!(
        "{:<44} {:>13.2}x   (changed: {}; upgrade took {})",
        "  ratio",
        (fetched + manifest) as f64 / target as f64,
        names.join(", "),
        ms(upgrade_time)
    );
}
