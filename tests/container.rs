//! Container images: a real registry (Debian's docker-registry on loopback),
//! images built with buildah from a Containerfile, pulled by skopeo's image
//! proxy into real sysroots on tmpfs.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use common::debs::{apt_repository, Deb};
use common::images::*;
use common::*;

fn deployment_root(s: &TestSysroot, index: usize) -> PathBuf {
    let d = s.deployments()[index].clone();
    s.deployment_dir(&d.0, d.1)
}

/// Everything a user does with images, in the order a user does it: rebase
/// to a base image, upgrade to a derived one (only its new layers fetched),
/// layer a package on top, roll back.
#[test]
fn rebase_upgrade_layer_and_roll_back_with_images_from_a_registry() {
    let registry = Registry::start();
    let buildah = Buildah::new();
    let host = registry.host();
    let context = tempfile::tempdir().unwrap();
    base_context(context.path(), "13.1", true);
    let base_digest = buildah.build_and_push(
        context.path(),
        "FROM scratch\nADD rootfs.tar /\nLABEL org.opencontainers.image.version=13.1\n",
        &format!("{host}/debian/os:stable"),
    );

    let s = TestSysroot::at_v1();
    let image = format!("ostree-unverified-registry:{host}/debian/os:stable");
    let (rc, out, err) = code(s.cli().args(["rebase", &image]));
    assert_eq!(rc, 0, "{out}{err}");
    let status = s.status();
    let d = &status["deployments"][0];
    assert_eq!(d["containerImageReference"], image.as_str(), "{status}");
    assert_eq!(d["imageDigest"], base_digest.as_str());
    assert_eq!(d["version"], "13.1");
    assert!(d.get("refspec").is_none(), "{d}");
    let text = stdout(s.cli().arg("status"));
    assert!(
        text.contains(&image) && text.contains(&base_digest),
        "{text}"
    );
    // Deployed the way compose would have made it.
    let root = deployment_root(&s, 0);
    assert!(root.join("usr/etc/passwd").is_file());
    assert!(root.join("usr/share/dpkg/database/status").is_file());
    assert!(root
        .join("usr/lib/modules/6.1.0-apt-ostree-demo/vmlinuz")
        .is_file());
    assert!(
        fs::read_to_string(root.join("usr/lib/sysusers.d/apt-ostree-image.conf"))
            .unwrap()
            .contains("u daemon 1:1")
    );
    s.assert_fsck_clean();

    // Nothing new: no layer is fetched again.
    let before = registry.blob_gets().len();
    let (rc, out, err) = code(s.cli().args(["upgrade", "--check"]));
    assert_eq!(rc, 77, "{out}{err}");
    let base_layers = manifest_layers(&format!("{host}/debian/os:stable"));
    let gets = registry.blob_gets()[before..].to_vec();
    assert!(
        base_layers.iter().all(|l| !gets.contains(l)),
        "a check fetched a layer: {gets:?}"
    );

    // A derived image: a file added, a base file deleted, a local package installed.
    let derived = tempfile::tempdir().unwrap();
    let deb = Deb::new("demo-derived", "1.0")
        .file("/usr/share/demo-derived/hello", "from the derived image\n")
        .build(derived.path());
    fs::copy(&deb, derived.path().join("demo-derived.deb")).unwrap();
    fs::write(derived.path().join("motd"), "derived motd\n").unwrap();
    let derived_digest = buildah.build_and_push(
        derived.path(),
        &format!(
            "FROM {host}/debian/os:stable\nCOPY motd /etc/motd.derived\nRUN rm /etc/issue.net\n\
             COPY demo-derived.deb /tmp/\nRUN dpkg -i /tmp/demo-derived.deb && rm /tmp/demo-derived.deb\n\
             LABEL org.opencontainers.image.version=13.2\n"
        ),
        &format!("{host}/debian/os:stable"),
    );
    assert_ne!(derived_digest, base_digest);
    let (rc, out, err) = code(s.cli().args(["upgrade", "--check"]));
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains(&format!("Digest: {derived_digest}")), "{out}");
    let checked = registry.blob_gets().len();
    let (rc, out, err) = code(s.cli().arg("upgrade"));
    assert_eq!(rc, 0, "{out}{err}");
    // Only the derived image's new layers (and its config) were fetched:
    // the base layer it shares with the deployed image was not.
    let fetched = registry.blob_gets()[checked..].to_vec();
    let layers = manifest_layers(&format!("{host}/debian/os:stable"));
    let (shared, new) = layers.split_at(1);
    assert_eq!(shared, &manifest_layers_of_digest(&host, &base_digest)[..]);
    assert!(
        !fetched.contains(&shared[0]),
        "the shared base layer was fetched again: {fetched:?}"
    );
    for layer in new {
        assert!(fetched.contains(layer), "{layer} not fetched: {fetched:?}");
    }
    assert!(
        fetched.len() <= new.len() + 1,
        "more than the new layers and the config: {fetched:?}"
    );
    let status = s.status();
    let d = &status["deployments"][0];
    assert_eq!(d["imageDigest"], derived_digest.as_str(), "{status}");
    assert_eq!(d["version"], "13.2");
    let root = deployment_root(&s, 0);
    assert_eq!(
        fs::read_to_string(root.join("usr/etc/motd.derived")).unwrap(),
        "derived motd\n"
    );
    assert!(
        !root.join("usr/etc/issue.net").exists(),
        "RUN rm did not delete"
    );
    assert!(root.join("usr/share/demo-derived/hello").is_file());
    let listed = stdout(s.cli().args(["db", "list"]));
    assert!(listed.contains("demo-derived"), "{listed}");

    // Layering on top of an image deployment, from an apt repository.
    let apt = tempfile::tempdir().unwrap();
    apt_repository(
        apt.path(),
        &[Deb::new("demo-on-image", "1.0").file("/usr/share/demo-on-image/ok", "layered\n")],
    );
    let http = HttpServer::start(apt.path(), None);
    fs::write(
        deployment_root(&s, 0).join("etc/apt/sources.list.d/test.list"),
        format!("deb [trusted=yes] {}/ ./\n", http.url()),
    )
    .unwrap();
    let (rc, out, err) = code(s.cli().args(["install", "demo-on-image"]));
    assert_eq!(rc, 0, "{out}{err}");
    let status = s.status();
    let d = &status["deployments"][0];
    assert_eq!(d["requestedPackages"], serde_json::json!(["demo-on-image"]));
    assert_eq!(d["containerImageReference"], image.as_str());
    assert_eq!(d["imageDigest"], derived_digest.as_str(), "{d}");
    assert!(deployment_root(&s, 0)
        .join("usr/share/demo-on-image/ok")
        .is_file());
    s.assert_fsck_clean();

    // Rollback makes the derived image without the layer the default again.
    let (rc, out, err) = code(s.cli().arg("rollback"));
    assert_eq!(rc, 0, "{out}{err}");
    let status = s.status();
    let d = &status["deployments"][0];
    assert_eq!(d["imageDigest"], derived_digest.as_str());
    assert_eq!(d["requestedPackages"], serde_json::json!([]));

    // Cleanup keeps what deployments use and drops the rest.
    let (rc, out, err) = code(s.cli().args(["cleanup", "-b"]));
    assert_eq!(rc, 0, "{out}{err}");
    s.assert_fsck_clean();
}

/// Each kind of bad input: a typed error, and no deployment, ref or layer left behind.
#[test]
fn bad_image_references_and_images_change_nothing() {
    let registry = Registry::start();
    let buildah = Buildah::new();
    let host = registry.host();
    let s = TestSysroot::at_v1();
    let deployments = s.deployments();
    let refs = || stdout(s.repo_cmd().arg("refs"));
    let refs_before = refs();
    let fails_with = |args: &[&str], error: &str| {
        let (rc, out, err) = code(s.cli().args(args));
        assert_eq!(rc, 1, "{args:?}: {out}{err}");
        assert!(err.contains(error), "{args:?}: wanted {error}: {err}");
        assert_eq!(
            s.deployments(),
            deployments,
            "{args:?} changed the deployments"
        );
        err
    };

    fails_with(
        &["rebase", "ostree-unverified-registry:Not A Name"],
        "invalid image reference",
    );
    fails_with(
        &["rebase", "ostree-unverified-image:ftp://x/y"],
        "invalid image reference",
    );
    // Nothing listens on port 9 of loopback.
    fails_with(
        &["rebase", "ostree-unverified-registry:127.0.0.1:9/os:1"],
        "fetching the image",
    );
    fails_with(
        &[
            "rebase",
            &format!("ostree-unverified-registry:{host}/no/such:tag"),
        ],
        "fetching the image",
    );
    // Debian's policy accepts anything: "signed" would mean nothing.
    fails_with(
        &[
            "rebase",
            &format!("ostree-image-signed:registry:{host}/os:1"),
        ],
        "signature check failed",
    );

    // An image without a kernel.
    let context = tempfile::tempdir().unwrap();
    base_context(context.path(), "13.1", false);
    buildah.build_and_push(
        context.path(),
        "FROM scratch\nADD rootfs.tar /\n",
        &format!("{host}/nokernel:1"),
    );
    let err = fails_with(
        &[
            "rebase",
            &format!("ostree-unverified-registry:{host}/nokernel:1"),
        ],
        "cannot be deployed",
    );
    assert!(err.contains("no kernel"), "{err}");

    // A layer whose content does not match its digest.
    base_context(context.path(), "13.1", true);
    buildah.build_and_push(
        context.path(),
        "FROM scratch\nADD rootfs.tar /\n",
        &format!("{host}/corrupt:1"),
    );
    let layer = manifest_layers(&format!("{host}/corrupt:1"))[0].clone();
    let blob = registry.blob_path(&layer);
    let mut bytes = fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&blob, bytes).unwrap();
    fails_with(
        &[
            "rebase",
            &format!("ostree-unverified-registry:{host}/corrupt:1"),
        ],
        "fetching the image",
    );
    // No ref of any image or layer, good or bad, was left behind.
    assert_eq!(refs(), refs_before);
    s.assert_fsck_clean();
}

/// `compose container-encapsulate`: the same commit gives the same image;
/// one changed package changes few layers; a Containerfile builds on the
/// image with dpkg and apt's state where they expect it, and the derived
/// image deploys.
#[test]
fn an_encapsulated_commit_is_a_base_that_containerfiles_build_on() {
    let registry = Registry::start();
    let buildah = Buildah::new();
    let host = registry.host();
    let base = base_repo();
    let out = tempfile::tempdir().unwrap();
    let encapsulate = |rev: &str, dest: &str| encapsulate(&base.path, rev, dest);
    let dir = out.path().join("oci");
    let v2 = encapsulate(&base.v2, &format!("oci:{}:v2", dir.display()));
    let again = encapsulate(&base.v2, &format!("oci:{}:again", dir.display()));
    assert_eq!(v2, again, "the same commit gave another image");
    let v1 = encapsulate(&base.v1, &format!("oci:{}:v1", dir.display()));
    for blob in fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let mode = blob.unwrap().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "a blob other users' podman cannot read");
    }
    let layers = |tag: &str| manifest_layers_in(&format!("oci:{}:{tag}", dir.display()));
    let (l1, l2) = (layers("v1"), layers("v2"));
    assert!(l2.len() > 4, "not split by package: {l2:?}");
    let changed = l2.iter().filter(|l| !l1.contains(l)).count();
    // demo-base 1.0 -> 1.1: its own layer, dpkg's database, and the
    // version file no package owns.
    assert!(changed <= 3, "{changed} of {} layers changed", l2.len());
    assert_ne!(v1, v2);

    // --previous-build-manifest: the packages with layers of their own in
    // the previous build keep them, whatever their size now (here a small
    // one, dash, named in the previous manifest; with 6 layers only one
    // package gets its own).
    let contents = |reference: &str| -> Vec<String> {
        let raw: serde_json::Value = serde_json::from_str(&stdout(
            Command::new("skopeo").args(["inspect", "--raw", reference]),
        ))
        .unwrap();
        raw["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                l["annotations"]["org.aptostree.layer.content"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let small = |tag: &str, extra: &[&std::ffi::OsStr]| {
        code(
            Command::new(cli())
                .args([
                    "compose",
                    "container-encapsulate",
                    "--max-layers",
                    "6",
                    "--repo",
                ])
                .arg(&base.path)
                .arg(&base.v2)
                .arg(format!("oci:{}:{tag}", dir.display()))
                .args(extra),
        )
    };
    let (rc, out, err) = small("small", &[]);
    assert_eq!(rc, 0, "{out}{err}");
    let by_size = contents(&format!("oci:{}:small", dir.display()));
    assert!(!by_size.contains(&"dash".to_string()), "{by_size:?}");
    let mut previous: serde_json::Value =
        serde_json::from_str(&stdout(Command::new("skopeo").args([
            "inspect",
            "--raw",
            &format!("oci:{}:small", dir.display()),
        ])))
        .unwrap();
    previous["layers"][1]["annotations"]["org.aptostree.layer.content"] = "dash".into();
    let manifest = out_dir_file(&dir, "previous.json", &previous.to_string());
    let (rc, out, err) = small(
        "kept",
        &["--previous-build-manifest".as_ref(), manifest.as_os_str()],
    );
    assert_eq!(rc, 0, "{out}{err}");
    let kept = contents(&format!("oci:{}:kept", dir.display()));
    assert_eq!(kept[1], "dash", "{kept:?}");
    assert_eq!(kept.len(), by_size.len());
    // Nonsense is refused before anything is written.
    let nonsense = out_dir_file(&dir, "nonsense.json", "{\"schemaVersion\": 2}");
    let (rc, _, err) = small(
        "never",
        &["--previous-build-manifest".as_ref(), nonsense.as_os_str()],
    );
    assert_eq!(rc, 1);
    assert!(
        err.contains("--previous-build-manifest") && err.contains("no \"layers\""),
        "{err}"
    );
    let index = fs::read_to_string(dir.join("index.json")).unwrap();
    assert!(!index.contains("never"), "{index}");
    let inspect: serde_json::Value = serde_json::from_str(&stdout(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:v2", dir.display())),
    ))
    .unwrap();
    assert_eq!(inspect["Labels"]["containers.bootc"], "1", "{inspect}");
    assert_eq!(inspect["Labels"]["ostree.bootable"], "1");
    assert_eq!(
        inspect["Labels"]["org.opencontainers.image.version"],
        "12.2"
    );

    // Straight to a registry (through skopeo), then FROM it.
    let pushed = encapsulate(&base.v2, &format!("registry:{host}/debian/base:12"));
    assert_eq!(pushed, v2, "the registry got another image");
    // A machine follows a tag that first names the base itself...
    run(Command::new("skopeo").args([
        "copy",
        &format!("docker://{host}/debian/base:12"),
        &format!("docker://{host}/debian/derived:1"),
    ]));
    let s = TestSysroot::at_v1();
    let image = format!("ostree-unverified-registry:{host}/debian/derived:1");
    let (rc, out, err) = code(s.cli().args(["rebase", &image]));
    assert_eq!(rc, 0, "{out}{err}");
    // ...then a Containerfile's build is pushed to it.
    let context = tempfile::tempdir().unwrap();
    let deb = Deb::new("demo-derived", "1.0")
        .file("/usr/share/demo-derived/hello", "from the derived image\n")
        .build(context.path());
    fs::copy(&deb, context.path().join("demo-derived.deb")).unwrap();
    let derived = buildah.build_and_push(
        context.path(),
        &format!(
            "FROM {host}/debian/base:12\n\
             COPY demo-derived.deb /tmp/\n\
             RUN dpkg -i /tmp/demo-derived.deb && rm /tmp/demo-derived.deb && dpkg -s demo-derived\n\
             RUN test -d /var/lib/apt/lists/partial && echo built > /root/built && rm /etc/issue.net\n"
        ),
        &format!("{host}/debian/derived:1"),
    );
    // The build inherited the base's package list, which no longer holds:
    // the preview must read the package it installed from the image.
    let (rc, out, err) = code(s.cli().args(["upgrade", "--preview"]));
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("demo-derived"), "{out}");
    let (rc, out, err) = code(s.cli().arg("upgrade"));
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(
        s.status()["deployments"][0]["imageDigest"],
        derived.as_str()
    );
    let root = deployment_root(&s, 0);
    assert!(root.join("usr/share/demo-derived/hello").is_file());
    assert!(!root.join("usr/etc/issue.net").exists());
    assert!(root.join("usr/etc/passwd").is_file());
    let tmpfiles =
        fs::read_to_string(root.join("usr/lib/tmpfiles.d/apt-ostree-compose.conf")).unwrap();
    assert!(
        tmpfiles.contains("L /var/lib/dpkg - - - - ../../usr/share/dpkg/database"),
        "{tmpfiles}"
    );
    assert!(
        tmpfiles.contains("/var/roothome/built"),
        "what RUN wrote to /root is kept: {tmpfiles}"
    );
    let listed = stdout(s.cli().args(["db", "list"]));
    assert!(
        listed.contains("demo-derived") && listed.contains("demo-base"),
        "{listed}"
    );
    s.assert_fsck_clean();

    // Nonsense destinations are refused before anything is written.
    let (rc, _, err) = code(
        Command::new(cli())
            .args(["compose", "container-encapsulate", "--repo"])
            .arg(&base.path)
            .args([&base.v2, "ftp://nowhere/x"]),
    );
    assert_eq!(rc, 1);
    assert!(err.contains("invalid image reference"), "{err}");
}

fn encapsulate_to(rev: &str, dest: &str) -> String {
    encapsulate(&base_repo().path, rev, dest)
}

/// An encapsulated image lists its packages: `upgrade --preview` shows the
/// package changes without fetching a layer. A digest pins; `oci:`
/// directories are a transport like a registry.
#[test]
fn preview_from_the_package_label_digest_pins_and_oci_directories() {
    let registry = Registry::start();
    let host = registry.host();
    let base = base_repo();
    let tag = format!("{host}/debian/os:stable");
    let d1 = encapsulate_to(&base.v1, &format!("registry:{tag}"));
    let s = TestSysroot::at_v1();
    let image = format!("ostree-unverified-registry:{tag}");
    let (rc, out, err) = code(s.cli().args(["rebase", &image]));
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(s.status()["deployments"][0]["imageDigest"], d1.as_str());

    let d2 = encapsulate_to(&base.v2, &format!("registry:{tag}"));
    let new_layers = manifest_layers(&tag);
    let before = registry.blob_gets().len();
    let (rc, out, err) = code(s.cli().args(["upgrade", "--preview"]));
    assert_eq!(rc, 0, "{out}{err}");
    assert!(
        out.contains("demo-base") && out.contains("1.1"),
        "no package diff: {out}"
    );
    let gets = registry.blob_gets()[before..].to_vec();
    assert!(
        gets.iter().all(|g| !new_layers.contains(g)),
        "the preview fetched layers: {gets:?}"
    );
    assert_eq!(s.deployments().len(), 2, "a preview deployed");

    // deploy DIGEST pins the machine to that image.
    let (rc, out, err) = code(s.cli().args(["deploy", &d2]));
    assert_eq!(rc, 0, "{out}{err}");
    let status = s.status();
    let d = &status["deployments"][0];
    assert_eq!(d["imageDigest"], d2.as_str(), "{status}");
    assert_eq!(
        d["containerImageReference"],
        format!("ostree-unverified-registry:{host}/debian/os@{d2}").as_str()
    );
    let (rc, out, err) = code(s.cli().arg("upgrade"));
    assert!(
        out.contains("pinned") || err.contains("pinned"),
        "{rc} {out}{err}"
    );
    let (rc, _, err) = code(s.cli().args(["deploy", "sha256:nonsense"]));
    assert_eq!(rc, 1);
    assert!(err.contains("not found"), "{err}");

    // An OCI layout directory, as a USB stick or a build would leave it.
    let dir = tempfile::tempdir().unwrap();
    let oci = encapsulate_to(&base.v2, &format!("oci:{}:v2", dir.path().display()));
    assert_eq!(oci, d2, "the same commit, another digest");
    let s = TestSysroot::at_v1();
    let (rc, out, err) = code(s.cli().args([
        "rebase",
        &format!("ostree-unverified-image:oci:{}:v2", dir.path().display()),
    ]));
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(s.status()["deployments"][0]["imageDigest"], d2.as_str());
    s.assert_fsck_clean();
}

/// Write `content` to `name` beside the test's OCI directory.
fn out_dir_file(oci: &std::path::Path, name: &str, content: &str) -> PathBuf {
    let path = oci.parent().unwrap().join(name);
    fs::write(&path, content).unwrap();
    path
}

/// A machine that follows an image in a registry takes its update from a
/// copy on a volume (an OCI layout, as `skopeo copy ... oci:DIR/oci:TAG`
/// writes it) with the registry gone, and keeps following the registry. A
/// volume without a layout, or without the image's tag, is refused and
/// changes nothing; `deploy DIGEST --from` finds an image by its digest and
/// `rebase --from` takes an image from a volume too.
#[test]
fn image_updates_from_an_oci_layout_on_a_volume() {
    let registry = Registry::start();
    let host = registry.host();
    let base = base_repo();
    let tag = format!("{host}/debian/os:stable");
    let d1 = encapsulate_to(&base.v1, &format!("registry:{tag}"));
    let image = format!("ostree-unverified-registry:{tag}");
    let s = TestSysroot::at_v1();
    let (rc, out, err) = code(s.cli().args(["rebase", &image]));
    assert_eq!(rc, 0, "{out}{err}");
    // No network from here on: only the volume has the update.
    drop(registry);

    let volume = tempfile::tempdir().unwrap();
    let vol = volume.path();
    let upgrade_from = |dir: &std::path::Path| code(s.cli().args(["upgrade", "--from"]).arg(dir));
    let before = s.deployments();
    let (rc, _, err) = upgrade_from(vol);
    assert_eq!(rc, 1);
    assert!(err.contains("no OCI layout there"), "{err}");
    encapsulate_to(&base.v2, &format!("oci:{}/oci:testing", vol.display()));
    let (rc, _, err) = upgrade_from(vol);
    assert_eq!(rc, 1);
    assert!(
        err.contains("no image tagged stable") && err.contains("testing"),
        "{err}"
    );
    assert_eq!(
        s.deployments(),
        before,
        "a refused update changed something"
    );

    // The default deployment is the image `digest` and follows `reference`.
    let assert_default = |s: &TestSysroot, digest: &str, reference: &str| {
        let status = s.status();
        let d = &status["deployments"][0];
        assert_eq!(d["imageDigest"], digest, "{status}");
        assert_eq!(d["containerImageReference"], reference, "{status}");
    };
    let d2 = encapsulate_to(&base.v2, &format!("oci:{}/oci:stable", vol.display()));
    let (rc, out, err) = upgrade_from(vol);
    assert_eq!(rc, 0, "{out}{err}");
    // Still the registry's image, not the volume's.
    assert_default(&s, &d2, &image);
    let (rc, out, err) = upgrade_from(vol);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("No upgrade available"), "{out}");
    // deploy DIGEST --from: the image with that digest, whatever its tag.
    let (rc, _, err) = code(s.cli().args(["deploy", "--from"]).arg(vol).arg(&d1));
    assert_eq!(rc, 1);
    assert!(err.contains(&format!("no tagged image {d1}")), "{err}");
    assert_eq!(
        encapsulate_to(&base.v1, &format!("oci:{}/oci:old", vol.display())),
        d1
    );
    // An older image, as an older commit, needs --allow-downgrade.
    let (rc, out, err) = code(s.cli().args(["deploy", "--from"]).arg(vol).arg(&d1));
    assert_eq!(rc, 1, "{out}{err}");
    assert!(err.contains("--allow-downgrade"), "{err}");
    let (rc, out, err) = code(
        s.cli()
            .args(["deploy", "--allow-downgrade", "--from"])
            .arg(vol)
            .arg(&d1),
    );
    assert_eq!(rc, 0, "{out}{err}");
    assert_default(
        &s,
        &d1,
        &format!("ostree-unverified-registry:{host}/debian/os@{d1}"),
    );

    // rebase --from: a machine on an OSTree ref moves to the image on the volume.
    let s = TestSysroot::at_v1();
    let (rc, out, err) = code(s.cli().args(["rebase", "--from"]).arg(vol).arg(&image));
    assert_eq!(rc, 0, "{out}{err}");
    assert_default(&s, &d2, &image);
    s.assert_fsck_clean();
}
