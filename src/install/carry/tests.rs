use super::*;

#[test]
fn fstab_keeps_the_images_mounts_and_adds_the_machines_others() {
    let mine = "# /etc/fstab\nUUID=r / ext4 errors=remount-ro 0 1\nUUID=e /boot/efi vfat umask=0077 0 1\n\nUUID=h /home ext4 defaults 0 2\n";
    let image = "UUID=b /boot ext4 defaults 1 2";
    let merged = merge_fstab(mine, image);
    assert!(
        merged.starts_with("UUID=b /boot ext4 defaults 1 2\n"),
        "{merged}"
    );
    assert!(merged.contains("UUID=e /boot/efi vfat"), "{merged}");
    assert!(merged.contains("UUID=h /home ext4"), "{merged}");
    assert!(!merged.contains(" / ext4"), "{merged}");
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn carry_copies_the_machines_files_and_never_writes_through_an_images_link() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
    write(&old.join("hostname"), "plain-vm\n");
    write(
        &old.join("passwd"),
        "root:x:0:0::/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n",
    );
    write(&old.join("ssh/ssh_host_ed25519_key"), "PRIVATE\n");
    write(&old.join("ssh/sshd_config"), "# the machine's\n");
    write(
        &old.join("systemd/network/10-admin.network"),
        "[Network]\nDHCP=yes\n",
    );
    write(
        &old.join("apt/sources.list.d/debian.sources"),
        "old release\n",
    );
    write(
        &old.join("apt/sources.list.d/vendor.list"),
        "deb http://vendor/ ./\n",
    );
    write(&new.join("hostname"), "localhost\n");
    write(&new.join("passwd"), "root:x:0:0::/root:/bin/sh\n");
    write(&old.join("group"), "root:x:0:\nalice:x:1000:\nssh:x:101:\n");
    write(&new.join("group"), "root:x:0:\nsystemd-resolve:x:101:\n");
    // An image directory owned by a group whose id this machine gives to ssh.
    std::fs::create_dir_all(new.join("systemd/resolved.conf.d")).unwrap();
    std::os::unix::fs::lchown(new.join("systemd/resolved.conf.d"), Some(0), Some(101)).unwrap();
    write(
        &new.join("apt/sources.list.d/debian.sources"),
        "image release\n",
    );
    write(&new.join("ssh/sshd_config"), "# the image's\n");
    let carried = carry(&old, &new).unwrap();
    let read = |p: &str| std::fs::read_to_string(new.join(p)).unwrap();
    assert_eq!(read("hostname"), "plain-vm\n");
    assert!(read("passwd").contains("alice:x:1000"));
    assert!(
        read("group").contains("systemd-resolve:x:100:"),
        "{}",
        read("group")
    );
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(new.join("systemd/resolved.conf.d")).unwrap();
    assert_eq!(
        owner.gid(),
        100,
        "the image's directory follows its group's new id"
    );
    assert_eq!(read("ssh/ssh_host_ed25519_key"), "PRIVATE\n");
    assert_eq!(read("ssh/sshd_config"), "# the image's\n");
    assert_eq!(read("apt/sources.list.d/debian.sources"), "image release\n");
    assert_eq!(
        read("apt/sources.list.d/vendor.list"),
        "deb http://vendor/ ./\n"
    );
    assert_eq!(
        read("systemd/network/10-admin.network"),
        "[Network]\nDHCP=yes\n"
    );
    assert!(carried
        .paths
        .contains(&"apt/sources.list.d/vendor.list".to_string()));
}

#[test]
fn an_images_link_to_the_host_is_never_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, new, victim) = (
        tmp.path().join("old"),
        tmp.path().join("new"),
        tmp.path().join("victim"),
    );
    write(
        &old.join("systemd/network/10-admin.network"),
        "[Network]\nDHCP=yes\n",
    );
    write(&old.join("hostname"), "plain-vm\n");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::create_dir_all(new.join("systemd")).unwrap();
    std::os::unix::fs::symlink(&victim, new.join("systemd/network")).unwrap();
    std::os::unix::fs::symlink(victim.join("hostname"), new.join("hostname")).unwrap();
    // Carried or refused, never through the links.
    let _ = carry(&old, &new);
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        0,
        "written through a link"
    );
}
