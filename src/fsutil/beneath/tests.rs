use super::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// A tree with links out of it (absolute and relative) at the places
/// an image plants them, and a victim directory beside it.
fn hostile() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (root, victim) = (dir.path().join("root"), dir.path().join("victim"));
    fs::create_dir_all(root.join("usr/share")).unwrap();
    fs::create_dir_all(victim.join("sub")).unwrap();
    fs::write(victim.join("precious"), "precious").unwrap();
    std::os::unix::fs::symlink(&victim, root.join("abs")).unwrap();
    std::os::unix::fs::symlink("../../../victim", root.join("usr/share/rel")).unwrap();
    std::os::unix::fs::symlink(victim.join("precious"), root.join("file-link")).unwrap();
    (dir, root, victim)
}

fn victim_unchanged(victim: &Path) {
    let names: Vec<_> = fs::read_dir(victim)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(
        fs::read_to_string(victim.join("precious")).unwrap(),
        "precious"
    );
    assert_eq!(fs::read_dir(victim.join("sub")).unwrap().count(), 0);
}

#[test]
fn links_out_of_the_tree_resolve_inside_it() {
    let (_dir, root, victim) = hostile();
    let tree = Beneath::open(&root).unwrap();
    // Writes through a link on the way land inside the tree.
    tree.create_dir_all("abs").unwrap_err();
    fs::create_dir_all(root.join(victim.strip_prefix("/").unwrap())).unwrap();
    tree.write("abs/new", b"x", 0o644).unwrap();
    assert_eq!(
        fs::read(root.join(victim.strip_prefix("/").unwrap()).join("new")).unwrap(),
        b"x"
    );
    // `..` stops at the root: usr/share/rel is <root>/victim.
    fs::create_dir(root.join("victim")).unwrap();
    tree.write("usr/share/rel/new", b"y", 0o644).unwrap();
    assert_eq!(fs::read(root.join("victim/new")).unwrap(), b"y");
    // A link at the end is replaced, read, listed and removed as a link.
    assert!(tree.read("file-link").is_err());
    assert!(tree.entries("abs").is_err());
    assert_eq!(tree.meta("abs").unwrap().unwrap().kind, Kind::Symlink);
    tree.write("file-link", b"mine", 0o600).unwrap();
    assert_eq!(tree.read("file-link").unwrap().unwrap(), b"mine");
    tree.remove_all("abs").unwrap();
    tree.remove_all("usr/share/rel").unwrap();
    assert!(tree.meta("abs").unwrap().is_none());
    victim_unchanged(&victim);
}

#[test]
fn copies_and_moves_never_leave_their_trees() {
    let (dir, root, victim) = hostile();
    let other = dir.path().join("other");
    fs::create_dir_all(other.join("d/e")).unwrap();
    fs::write(other.join("d/e/f"), "f").unwrap();
    fs::set_permissions(other.join("d/e"), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", other.join("d/shadow")).unwrap();
    let (tree, from) = (
        Beneath::open(&root).unwrap(),
        Beneath::open(&other).unwrap(),
    );
    // Into a link: resolved inside; the copy's own link stays a link.
    fs::create_dir_all(root.join("victim")).unwrap();
    from.copy_to("d", &tree, "usr/share/rel/d").unwrap();
    let copied = root.join("victim/d");
    assert_eq!(fs::read_to_string(copied.join("e/f")).unwrap(), "f");
    assert_eq!(
        fs::metadata(copied.join("e")).unwrap().mode() & 0o7777,
        0o700
    );
    assert_eq!(
        fs::read_link(copied.join("shadow")).unwrap(),
        Path::new("/etc/shadow")
    );
    from.move_to("d", &tree, "moved").unwrap();
    assert!(root.join("moved/e/f").is_file() && !other.join("d").exists());
    assert!(
        tree.rename("moved", &tree, "usr").is_err(),
        "rename replaced a directory"
    );
    tree.remove_all("victim").unwrap();
    victim_unchanged(&victim);
}

#[test]
fn nonsense_paths_are_refused() {
    let (_dir, root, _victim) = hostile();
    let tree = Beneath::open(&root).unwrap();
    for bad in [
        "",
        "/etc/passwd",
        "../victim",
        "usr/../..",
        "usr//share",
        "./usr",
    ] {
        assert!(tree.write(bad, b"x", 0o644).is_err(), "{bad:?}");
        assert!(tree.remove_all(bad).is_err(), "{bad:?}");
    }
    assert!(
        Beneath::open(&root.join("abs")).is_err(),
        "the root itself is a link"
    );
}

#[test]
fn links_a_host_reader_would_follow_out_are_found() {
    let (_dir, root, _victim) = hostile();
    let tree = Beneath::open(&root).unwrap();
    fs::create_dir_all(root.join("usr/lib")).unwrap();
    fs::write(root.join("usr/lib/os-release"), "ID=debian\n").unwrap();
    std::os::unix::fs::symlink("../usr/lib/os-release", root.join("usr/os")).unwrap();
    std::os::unix::fs::symlink("share/rel/x", root.join("usr/via")).unwrap();
    assert!(tree.stays_inside("usr/lib/os-release").unwrap());
    assert!(
        tree.stays_inside("usr/os").unwrap(),
        "a relative link inside"
    );
    assert!(tree.stays_inside("missing/x").unwrap());
    assert!(
        !tree.stays_inside("abs/precious").unwrap(),
        "an absolute link"
    );
    assert!(
        !tree.stays_inside("usr/share/rel").unwrap(),
        "a link above the root"
    );
    assert!(
        !tree.stays_inside("usr/via").unwrap(),
        "through a second link"
    );
}
