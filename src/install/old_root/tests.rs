use super::*;

fn touch(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A root as a conversion leaves it before the switch (a power cut there).
fn half_converted(root: &Path) {
    touch(&root.join("home/alice/notes.txt"), "notes");
    touch(&root.join("root/.profile"), "profile");
    touch(&root.join("usr/local/bin/tool"), "tool");
    touch(&root.join("var/lib/db/table"), "rows=42");
    touch(&root.join("boot/vmlinuz-6.12"), "kernel");
    touch(&root.join("boot/grub/grub.cfg"), "old menu");
    touch(&root.join("ostree/repo/config"), "[core]");
    touch(&root.join(INCOMPLETE.trim_start_matches('/')), "");
    std::fs::create_dir_all(root.join("ostree/deploy/debian/var")).unwrap();
    super::super::convert::move_var(root).unwrap();
    touch(&root.join("boot/loader.0/entries/ostree-1.conf"), "title x");
    std::os::unix::fs::symlink("loader.0", root.join("boot/loader")).unwrap();
    touch(&root.join("var/lib/dpkg/status"), "Package: old");
    super::super::convert::move_into_var(root).unwrap();
    state_aside(root).unwrap();
}

#[test]
fn an_interrupted_conversion_is_undone_and_nothing_of_the_machine_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    half_converted(root);
    assert!(interrupted(root));
    assert!(root.join("home").is_symlink());
    assert_eq!(
        std::fs::read_to_string(root.join("home/alice/notes.txt")).unwrap(),
        "notes"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("usr/local/bin/tool")).unwrap(),
        "tool"
    );

    undo(root).unwrap();
    for dir in ["home", "root", "usr/local"] {
        assert!(
            root.join(dir).is_dir() && !root.join(dir).is_symlink(),
            "{dir}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(root.join("home/alice/notes.txt")).unwrap(),
        "notes"
    );
    // /var is the machine's again, a directory.
    assert!(root.join("var").is_dir() && !root.join("var").is_symlink());
    assert_eq!(
        std::fs::read_to_string(root.join("var/lib/db/table")).unwrap(),
        "rows=42"
    );
    for gone in ["ostree", "boot/loader", "boot/loader.0", "var/home"] {
        assert!(
            !root.join(gone).exists() && !root.join(gone).is_symlink(),
            "{gone}"
        );
    }
    assert!(!interrupted(root));
    assert_eq!(
        std::fs::read_to_string(root.join("boot/grub/grub.cfg")).unwrap(),
        "old menu"
    );
}

#[test]
fn nothing_is_undone_once_the_menu_is_switched() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    half_converted(root);
    switch_menu(root).unwrap();
    assert_eq!(
        std::fs::read_link(root.join("boot/grub/grub.cfg")).unwrap(),
        Path::new("../loader/grub.cfg")
    );
    assert_eq!(
        std::fs::read_to_string(root.join("boot/grub/grub.cfg.old-root")).unwrap(),
        "old menu"
    );
    assert!(undo(root).is_err());
    assert!(root.join("ostree/repo/config").is_file());
    assert!(root.join("home").is_symlink());
}

#[test]
fn the_old_kernels_and_package_state_are_put_aside_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    touch(&root.join("boot/vmlinuz-6.12"), "kernel");
    touch(&root.join("boot/initrd.img-6.12"), "initrd");
    touch(&root.join("var/lib/dpkg/status"), "Package: old");
    touch(&root.join("var/lib/apt/extended_states"), "");
    std::fs::create_dir_all(root.join("boot/ostree")).unwrap();
    for _ in 0..2 {
        state_aside(root).unwrap();
        kernels_aside(root).unwrap();
    }
    assert!(root.join("boot/old-root/vmlinuz-6.12").is_file());
    assert!(!root.join("boot/vmlinuz-6.12").exists());
    assert!(root.join("boot/ostree").is_dir());
    assert_eq!(
        std::fs::read_to_string(root.join(OLD_STATE).join("var-lib-dpkg/status")).unwrap(),
        "Package: old"
    );
    assert!(!root.join("var/lib/dpkg").exists());
}

#[test]
fn cleanup_removes_the_old_system_and_leaves_the_administrators_own() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for dir in [
        "usr/bin",
        "etc",
        "ostree/deploy",
        "boot/ostree",
        "var/home",
        "data",
        "lost+found",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::os::unix::fs::symlink("var/home", root.join("home")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    let (removed, kept) = old_root_entries(root).unwrap();
    assert_eq!(removed, ["bin", "etc", "home", "usr"]);
    assert_eq!(kept, ["data"]);
}

#[test]
fn var_comes_back_from_between_the_two_exchanges() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    touch(&root.join("var/lib/db/table"), "rows=42");
    touch(&root.join(INCOMPLETE.trim_start_matches('/')), "");
    std::fs::create_dir_all(root.join(STATEROOT_VAR)).unwrap();
    // A power cut after the first exchange: /var empty, the data in the stateroot.
    std::os::unix::fs::symlink(STATEROOT_VAR, root.join(VAR_LINK)).unwrap();
    crate::fsutil::exchange(&root.join("var"), &root.join(STATEROOT_VAR)).unwrap();
    assert!(root.join(STATEROOT_VAR).join("lib/db/table").is_file());
    undo(root).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("var/lib/db/table")).unwrap(),
        "rows=42"
    );
    assert!(!root.join("ostree").exists() && !root.join(VAR_LINK).exists());
}

#[test]
fn after_both_exchanges_var_is_a_link_and_comes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    touch(&root.join("var/lib/db/table"), "rows=42");
    std::fs::create_dir_all(root.join(STATEROOT_VAR)).unwrap();
    super::super::convert::move_var(root).unwrap();
    assert!(root.join("var").is_symlink());
    assert_eq!(
        std::fs::read_to_string(root.join("var/lib/db/table")).unwrap(),
        "rows=42"
    );
    assert!(root.join(STATEROOT_VAR).join("lib/db/table").is_file());
    undo(root).unwrap();
    assert!(root.join("var").is_dir() && !root.join("var").is_symlink());
    assert_eq!(
        std::fs::read_to_string(root.join("var/lib/db/table")).unwrap(),
        "rows=42"
    );
}
