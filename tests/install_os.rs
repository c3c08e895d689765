//! `apt-ostree install-os` and `cleanup --old-root` from the command line,
//! on this (not converted, not OSTree-booted) build machine: nonsense and a
//! machine they do not apply to are refused, and nothing changes. The
//! conversion itself is proven on a real boot (VM suite, phases 30-32).

use std::path::Path;
use std::process::Command;

fn apt_ostree(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_apt-ostree"))
        .args(args)
        .output()
        .expect("running apt-ostree");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_source_that_is_neither_an_image_nor_a_url_is_refused_before_anything_is_read() {
    assert!(
        !Path::new("/ostree").exists(),
        "this test needs a machine that is not a sysroot"
    );
    for (args, says) in [
        (
            &["install-os", "to-existing-root", "/srv/repo"][..],
            "neither an image reference",
        ),
        (
            &["install-os", "to-existing-root", "http://127.0.0.1:9/repo"][..],
            "needs --ref",
        ),
        (
            &[
                "install-os",
                "to-existing-root",
                "--ref",
                "../x",
                "http://127.0.0.1:9/repo",
            ][..],
            "invalid ref name",
        ),
        (
            &[
                "install-os",
                "to-existing-root",
                "--ref",
                "debian/13",
                "ostree-unverified-registry:127.0.0.1:9/os:1",
            ][..],
            "--ref is for an OSTree remote",
        ),
        (
            &[
                "install-os",
                "to-existing-root",
                "--karg",
                "bad\nkarg",
                "--ref",
                "debian/13",
                "http://127.0.0.1:9/repo",
            ][..],
            "invalid kernel argument",
        ),
    ] {
        let (code, text) = apt_ostree(args);
        assert_eq!(code, 1, "{args:?}: {text}");
        assert!(text.contains(says), "{args:?}: {text}");
        assert!(!Path::new("/ostree").exists(), "{args:?} made /ostree");
    }
}

#[test]
fn cleanup_old_root_is_refused_on_a_machine_that_was_not_converted() {
    let (code, text) = apt_ostree(&["cleanup", "--old-root"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("runs on the converted machine"), "{text}");
    assert!(Path::new("/usr/bin").is_dir() && Path::new("/etc/os-release").exists());
    // It is a command of its own: no mixing with the daemon's cleanups.
    let (code, text) = apt_ostree(&["cleanup", "--old-root", "--pending"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("cannot be used with"), "{text}");
}
