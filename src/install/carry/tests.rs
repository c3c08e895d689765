use super::*;

#[test]
fn the_machines_accounts_keep_their_ids_and_the_images_new_ones_are_added() {
    let mine = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\nsshd:x:101:65534::/run/sshd:/usr/sbin/nologin\n";
    let image = "root:x:0:0:root:/root:/bin/sh\nsshd:x:104:65534::/run/sshd:/usr/sbin/nologin\npolkitd:x:990:990::/:/usr/sbin/nologin\n_apt:x:1000:65534::/nonexistent:/usr/sbin/nologin\n";
    let merged = merge_table(mine, image);
    assert_eq!(
        merged.text,
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n\
         sshd:x:101:65534::/run/sshd:/usr/sbin/nologin\npolkitd:x:990:990::/:/usr/sbin/nologin\n\
         _apt:x:1000:65534::/nonexistent:/usr/sbin/nologin\n"
    );
    assert_eq!(
        merged.warnings,
        vec!["the image's _apt has the id of this machine's alice".to_string()]
    );
}

#[test]
fn shadow_entries_merge_by_name_with_the_machines_password_hashes() {
    let mine = "root:$6$abc$hash:19000:0:99999:7:::\nalice:$6$def$alice:19000:0:99999:7:::\n";
    let image = "root:*:20000:0:99999:7:::\npolkitd:!*:20000::::::\n";
    let merged = merge_table(mine, image);
    assert!(
        merged.text.contains("alice:$6$def$alice:"),
        "{}",
        merged.text
    );
    assert!(
        merged.text.starts_with("root:$6$abc$hash:"),
        "{}",
        merged.text
    );
    assert!(merged.text.contains("polkitd:!*:"), "{}", merged.text);
    // Shadow's third field is a date, not an id: no warning.
    assert!(merged.warnings.is_empty(), "{:?}", merged.warnings);
}

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
    write(
        &new.join("apt/sources.list.d/debian.sources"),
        "image release\n",
    );
    write(&new.join("ssh/sshd_config"), "# the image's\n");
    let carried = carry(&old, &new).unwrap();
    let read = |p: &str| std::fs::read_to_string(new.join(p)).unwrap();
    assert_eq!(read("hostname"), "plain-vm\n");
    assert!(read("passwd").contains("alice:x:1000"));
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
