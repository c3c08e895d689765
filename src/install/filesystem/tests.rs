use super::*;

fn mount(target: &str, source: &str, fstype: &str) -> Mount {
    Mount {
        target: target.into(),
        source: source.into(),
        fstype: fstype.into(),
        uuid: Some("1234".into()),
        options: "rw".into(),
    }
}

/// LVM on LUKS on vdb3, /boot on vdb2, the ESP vdb1: what the VM suite makes.
fn target() -> Target {
    Target {
        dir: "/mnt".into(),
        root: mount("/mnt", "/dev/mapper/vg0-root", "ext4"),
        boot: Some(mount("/mnt/boot", "/dev/vdb2", "ext4")),
        layout: Layout {
            stack: vec!["lvm".into(), "crypt".into(), "part".into(), "disk".into()],
            open_kargs: vec!["rd.luks.uuid=5f3a".into(), "rd.lvm.lv=vg0/root".into()],
            disks: vec!["/dev/vdb".into()],
        },
        esp: Some("/dev/vdb1".into()),
        bios_disks: vec![],
        boot_disks: vec!["/dev/vdb".into()],
        free: 8 << 30,
        entries: vec![],
    }
}

#[test]
fn an_empty_root_on_lvm_on_luks_with_its_own_boot_is_accepted() {
    assert_eq!(refusals(&target(), 2 << 30), vec![]);
    // BIOS only, a plain partition, /boot on the root: also fine.
    let mut t = target();
    t.boot = None;
    t.layout.stack = vec!["part".into(), "disk".into()];
    t.esp = None;
    t.bios_disks = vec!["/dev/vdb".into()];
    assert_eq!(refusals(&t, 2 << 30), vec![]);
}

#[test]
fn each_target_it_cannot_install_onto_is_refused_and_says_what_to_do() {
    type Change = Box<dyn Fn(&mut Target)>;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|t| t.entries = vec!["etc".into(), "boot/vmlinuz".into()]),
            "not empty (etc, boot/vmlinuz)",
        ),
        (
            Box::new(|t| t.root.fstype = "vfat".into()),
            "handles ext4, xfs and btrfs",
        ),
        (
            Box::new(|t| t.boot.as_mut().unwrap().fstype = "vfat".into()),
            "must hold symbolic links",
        ),
        (
            Box::new(|t| t.boot = None),
            "lvm on crypt on part on disk, which GRUB cannot open",
        ),
        (
            Box::new(|t| t.esp = None),
            "/dev/vdb has neither an EFI System partition nor a BIOS boot partition",
        ),
        (Box::new(|t| t.free = 1 << 30), "1024 MiB free"),
    ];
    for (change, says) in cases {
        let mut t = target();
        change(&mut t);
        let found = refusals(&t, 2 << 30);
        assert_eq!(found.len(), 1, "{says}: {found:?}");
        let text = found[0].to_string();
        assert!(text.contains(says), "{text:?} should say {says:?}");
    }
}

#[test]
fn a_btrfs_subvolume_is_read_from_the_mount_options() {
    let mut root = mount("/mnt", "/dev/vda2", "btrfs");
    root.options = "rw,relatime,ssd,subvolid=256,subvol=/@".into();
    assert_eq!(btrfs_subvol(&root), Some("/@"));
    root.fstype = "ext4".into();
    assert_eq!(btrfs_subvol(&root), None);
}

#[test]
fn only_lost_and_found_and_empty_mount_places_count_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("lost+found/x")).unwrap();
    std::fs::create_dir_all(dir.path().join("boot/efi")).unwrap();
    assert_eq!(foreign_entries(dir.path()).unwrap(), Vec::<String>::new());
    assert_eq!(
        foreign_entries(&dir.path().join("boot")).unwrap(),
        Vec::<String>::new()
    );
    std::fs::write(dir.path().join("boot/efi/x"), "").unwrap();
    std::fs::create_dir_all(dir.path().join("ostree/repo")).unwrap();
    std::fs::write(dir.path().join("boot/grub.cfg"), "").unwrap();
    assert_eq!(foreign_entries(dir.path()).unwrap(), ["ostree"]);
    assert_eq!(
        foreign_entries(&dir.path().join("boot")).unwrap(),
        ["efi", "grub.cfg"]
    );
}

#[test]
fn clearing_a_failed_installation_leaves_it_empty_and_lost_and_found_whole() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("lost+found/kept")).unwrap();
    std::fs::create_dir_all(dir.path().join("ostree/deploy/debian/var")).unwrap();
    std::fs::create_dir_all(dir.path().join("boot/loader.0")).unwrap();
    std::os::unix::fs::symlink("loader.0", dir.path().join("boot/loader")).unwrap();
    clear(dir.path()).unwrap();
    assert!(dir.path().join("lost+found/kept").is_dir());
    assert_eq!(foreign_entries(dir.path()).unwrap(), Vec::<String>::new());
    assert_eq!(
        foreign_entries(&dir.path().join("boot")).unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn clearing_removes_a_deployment_that_libostree_made_immutable() {
    use rustix::fs::{ioctl_getflags, ioctl_setflags, IFlags};
    // On a file system with the attribute (ext4 under /var/tmp; tmpfs may lack it).
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let deployment = dir.path().join("ostree/deploy/debian/deploy/abc.0");
    std::fs::create_dir_all(deployment.join("etc")).unwrap();
    let fd = std::fs::File::open(&deployment).unwrap();
    let flags = ioctl_getflags(&fd).unwrap();
    ioctl_setflags(&fd, flags | IFlags::IMMUTABLE).expect("setting the immutable attribute");
    drop(fd);
    assert!(std::fs::remove_dir_all(dir.path().join("ostree")).is_err());
    clear(dir.path()).unwrap();
    assert!(!dir.path().join("ostree").exists());
}
