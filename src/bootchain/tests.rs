use super::*;

/// A tree with the chain's files (their contents name them) and a dpkg status.
fn tree_with_chain(dir: &Path, grub_version: &str) {
    for binary in &BINARIES {
        let path = dir.join(binary.tree_path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, binary.tree_path).unwrap();
    }
    let status = dir.join(crate::dpkg::DATABASE_DIR).join("status");
    std::fs::create_dir_all(status.parent().unwrap()).unwrap();
    let mut text = String::new();
    for (name, version) in [
        ("shim-signed", "1.51"),
        ("grub-efi-amd64-signed", grub_version),
        ("shim-helpers-amd64-signed", "1+16.1"),
        ("bash", "5.2"),
    ] {
        text.push_str(&format!(
            "Package: {name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {version}\n\n"
        ));
    }
    std::fs::write(status, text).unwrap();
}

#[test]
fn a_tree_without_the_chain_has_none_and_a_partial_one_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Chain::in_tree(dir.path()).unwrap().is_none());
    tree_with_chain(dir.path(), "1+2.12");
    std::fs::remove_file(dir.path().join(BINARIES[1].tree_path)).unwrap();
    let err = Chain::in_tree(dir.path()).err().unwrap().to_string();
    assert!(err.contains("grub-efi-amd64-signed missing"), "{err}");
    assert!(!err.contains("shim-signed,"), "{err}");
}

#[test]
fn each_directory_gets_its_files_and_the_versions_it_came_from() {
    let tree = tempfile::tempdir().unwrap();
    tree_with_chain(tree.path(), "1+2.12");
    let chain = Chain::in_tree(tree.path()).unwrap().unwrap();
    assert_eq!(chain.versions().len(), 3);
    let esp = tempfile::tempdir().unwrap();
    let stub = grub_cfg_stub("1234-abcd", "/grub");
    chain
        .write_dir(VENDOR_DIR, &esp.path().join(VENDOR_DIR), &stub)
        .unwrap();
    chain
        .write_dir(REMOVABLE_DIR, &esp.path().join(REMOVABLE_DIR), &stub)
        .unwrap();
    let read = |p: &str| std::fs::read_to_string(esp.path().join(p)).unwrap();
    assert_eq!(read("BOOT/BOOTX64.EFI"), BINARIES[0].tree_path);
    assert_eq!(read("debian/shimx64.efi"), BINARIES[0].tree_path);
    assert_eq!(read("BOOT/grubx64.efi"), BINARIES[1].tree_path);
    assert!(!esp.path().join("BOOT/fbx64.efi").exists());
    assert!(esp.path().join("debian/fbx64.efi").exists());
    assert!(read("debian/grub.cfg").contains("--set=root 1234-abcd"));
    assert!(read("debian/grub.cfg").contains("set prefix=($root)/grub"));
    let csv = std::fs::read(esp.path().join("debian/BOOTX64.CSV")).unwrap();
    assert_eq!(&csv[..4], &[0xff, 0xfe, b's', 0]);
    let manifest = read_manifest(&esp.path().join(VENDOR_DIR)).unwrap();
    assert_eq!(manifest["grub-efi-amd64-signed"], "1+2.12");
    assert!(!manifest.contains_key("bash"));
}

#[test]
fn an_older_chain_is_named_and_a_newer_or_equal_one_is_not() {
    let v = |grub: &str| -> Versions {
        [("shim-signed", "1.51"), ("grub-efi-amd64-signed", grub)]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let installed = v("1+2.12+9+deb13u4");
    assert!(older_than(&v("1+2.12+9+deb13u5"), &installed).is_none());
    assert!(older_than(&installed, &installed).is_none());
    let why = older_than(&v("1+2.12+9+deb13u3"), &installed).unwrap();
    assert!(
        why.contains("grub-efi-amd64-signed 1+2.12+9+deb13u3"),
        "{why}"
    );
}
