//! A digest in an image reference pins the machine to that image, on every
//! transport: the pulled manifest's digest is compared with the request
//! (the layout transports cannot even tell skopeo a digest), a mismatch is
//! an error that deploys nothing, and an older image needs
//! --allow-downgrade, as an older commit does. Images are OCI layouts
//! written by hand (tests/common/oci.rs).

mod common;

use std::fs;

use common::oci::*;
use common::*;

fn image(marker: &str) -> Vec<Layer> {
    vec![gzip_layer(&base(marker))]
}

fn at(created: &str) -> Options<'_> {
    Options {
        created: Some(created),
        ..Default::default()
    }
}

#[test]
fn digests_pin_images_on_every_transport() {
    let s = TestSysroot::at_v1();
    let images = tempfile::tempdir().unwrap();
    let layout = images.path().join("layout");
    let old = write_layout(&layout, "1", &image("old"), at("2026-01-01T00:00:00Z"));
    let reference = format!("ostree-unverified-image:oci:{}:1", layout.display());
    let wrong = format!("sha256:{}", "0".repeat(64));
    let marker = |s: &TestSysroot| {
        let (checksum, serial) = s.deployments()[0].clone();
        fs::read_to_string(s.deployment_dir(&checksum, serial).join("usr/share/marker")).unwrap()
    };
    let refused = |args: &[&str], why: &str| {
        let before = s.deployments();
        let (rc, out, err) = code(s.cli().args(args));
        assert_eq!(rc, 1, "{args:?}: {out}{err}");
        assert!(err.contains(why), "{args:?}: wanted {why}: {err}");
        assert_eq!(s.deployments(), before, "{args:?} changed the deployments");
    };

    // The layout holds another image than the one asked for.
    refused(
        &["rebase", &format!("{reference}@{wrong}")],
        &format!("{wrong}\" not found"),
    );
    let archive = images.path().join("layout.tar");
    run(std::process::Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg("."));
    refused(
        &[
            "rebase",
            &format!(
                "ostree-unverified-image:oci-archive:{}:1@{wrong}",
                archive.display()
            ),
        ],
        "not found",
    );
    // The right digest deploys, and the machine stays on it.
    run(s.cli().args(["rebase", &format!("{reference}@{old}")]));
    assert_eq!(marker(&s), "old");
    let status = s.status();
    assert_eq!(
        status["deployments"][0]["containerImageReference"]
            .as_str()
            .unwrap(),
        format!("{reference}@{old}")
    );
    let (rc, out, _) = code(s.cli().args(["upgrade", "--unchanged-exit-77"]));
    assert_eq!(rc, 77, "{out}");
    assert!(out.contains("pinned"), "{out}");

    // The tag moves to a newer image: deploying its digest takes it...
    let new = write_layout(&layout, "1", &image("new"), at("2026-06-01T00:00:00Z"));
    refused(&["deploy", &wrong], "not found");
    run(s.cli().args(["deploy", &new]));
    assert_eq!(marker(&s), "new");
    let (rc, out, _) = code(s.cli().args(["deploy", &new, "--unchanged-exit-77"]));
    assert_eq!(rc, 77, "{out}");
    // ...and back to the older one needs --allow-downgrade.
    write_layout(&layout, "1", &image("old"), at("2026-01-01T00:00:00Z"));
    refused(&["deploy", &old], "downgrade");
    run(s.cli().args(["deploy", &old, "--allow-downgrade"]));
    assert_eq!(marker(&s), "old");
    // Nonsense revisions are refused before anything is fetched.
    refused(&["deploy", "sha256:xyz"], "sha256:HEX");
    refused(&["deploy", "13.1"], "sha256:HEX");
    s.assert_fsck_clean();
}

/// `upgrade --download-only` keeps the image through cleanups and other
/// deployments, until it is deployed or something newer is.
#[test]
fn a_downloaded_image_stays_until_deployed_or_superseded() {
    let s = TestSysroot::at_v1();
    let images = tempfile::tempdir().unwrap();
    let layout = images.path().join("layout");
    write_layout(&layout, "1", &image("v1"), at("2026-01-01T00:00:00Z"));
    run(s.cli().args([
        "rebase",
        &format!("ostree-unverified-image:oci:{}:1", layout.display()),
    ]));
    let refs = || stdout(s.repo_cmd().arg("refs"));
    let marker = |s: &TestSysroot| {
        let (checksum, serial) = s.deployments()[0].clone();
        fs::read_to_string(s.deployment_dir(&checksum, serial).join("usr/share/marker")).unwrap()
    };

    let v2 = image("v2");
    let layer_blob = layout.join("blobs/sha256").join({
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&v2[0].bytes))
    });
    let d2 = write_layout(&layout, "1", &v2, at("2026-02-01T00:00:00Z"));
    run(s.cli().args(["upgrade", "--download-only"]));
    let image_ref = format!("apt-ostree/image/{}", d2.replace(':', "/"));
    for args in [
        &["cleanup", "-b", "-r", "-m", "-p"][..],
        &["kargs", "--append=quiet"],
        &["cleanup", "-b"],
    ] {
        run(s.cli().args(args));
        assert!(refs().contains(&image_ref), "{args:?} dropped the download");
    }
    // The layer is not fetched again: the layout no longer has it.
    fs::remove_file(&layer_blob).unwrap();
    let out = stdout(s.cli().arg("upgrade"));
    assert!(out.contains("no layer fetched"), "{out}");
    assert_eq!(marker(&s), "v2");
    run(s.cli().args(["cleanup", "-b"]));
    assert!(
        !refs().contains("apt-ostree/downloaded-image"),
        "{}",
        refs()
    );

    // Superseded: a download, then a newer image deployed.
    let d3 = write_layout(&layout, "1", &image("v3"), at("2026-03-01T00:00:00Z"));
    run(s.cli().args(["upgrade", "--download-only"]));
    assert!(refs().contains("apt-ostree/downloaded-image"));
    write_layout(&layout, "1", &image("v4"), at("2026-04-01T00:00:00Z"));
    run(s.cli().arg("upgrade"));
    assert_eq!(marker(&s), "v4");
    run(s.cli().args(["cleanup", "-b"]));
    let left = refs();
    assert!(!left.contains("apt-ostree/downloaded-image"), "{left}");
    assert!(!left.contains(&d3.replace(':', "/")), "{left}");
    s.assert_fsck_clean();
}
