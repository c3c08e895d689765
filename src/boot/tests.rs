use super::*;

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.0";

/// A booted deployment as `booted_name` finds it: the root is the
/// deployment's directory, and its `sysroot` leads back to the sysroot.
struct Booted {
    _sysroot: tempfile::TempDir,
    root: std::path::PathBuf,
}

fn booted(grub_dir: bool, env: Option<&[(&str, &str)]>) -> Booted {
    let sysroot = tempfile::tempdir().unwrap();
    let root = sysroot.path().join("ostree/deploy/debian/deploy").join(ID);
    std::fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink(sysroot.path(), root.join("sysroot")).unwrap();
    if grub_dir {
        std::fs::create_dir_all(root.join("boot/grub")).unwrap();
    }
    if let Some(vars) = env {
        let mut block = Env::default();
        for (name, value) in vars {
            block.set(name, value);
        }
        block.write(&root.join(GRUBENV)).unwrap();
    }
    Booted {
        _sysroot: sysroot,
        root,
    }
}

fn needs(check: bool, assess: bool) -> Triage {
    Triage { check, assess }
}

#[test]
fn a_boot_of_a_deployment_assessed_before_needs_neither_unit() {
    let b = booted(true, Some(&[(GOOD, ID), (CHAIN, ID)]));
    assert_eq!(crate::sysroot::booted_name(&b.root).as_deref(), Some(ID));
    let verdict = triage(&b.root);
    assert_eq!(verdict, needs(false, false));
    record_triage(&b.root, verdict).unwrap();
    let dir = b.root.join(TRIAGE_DIR);
    assert!(dir.is_dir());
    assert!(!dir.join("check").exists() && !dir.join("assess").exists());
}

#[test]
fn a_fallback_a_missing_block_or_a_new_deployment_get_their_units() {
    // GRUB fell back: the check rolls back.
    let fell_back = booted(true, Some(&[(GOOD, ID), (CHAIN, ID), (FAILED, "other.1")]));
    assert_eq!(triage(&fell_back.root), needs(true, false));
    // No block yet (a machine made without one): the check creates it.
    let no_block = booted(true, None);
    assert_eq!(triage(&no_block.root), needs(true, true));
    // Booted before, but its chain never reached the ESP.
    let no_chain = booted(true, Some(&[(GOOD, ID)]));
    assert!(triage(&no_chain.root).assess);
    // Not booted by GRUB: nothing to check, and the assessment as before.
    let no_grub = booted(false, None);
    assert_eq!(triage(&no_grub.root), needs(false, true));
}

#[test]
fn a_block_that_cannot_be_read_runs_both_units_and_flags_follow_each_boot() {
    let b = booted(true, None);
    std::fs::write(b.root.join(GRUBENV), b"not GRUB's block").unwrap();
    let verdict = triage(&b.root);
    assert_eq!(verdict, needs(true, true));
    record_triage(&b.root, verdict).unwrap();
    let dir = b.root.join(TRIAGE_DIR);
    assert!(dir.join("check").exists() && dir.join("assess").exists());
    // A later verdict removes what is no longer needed.
    record_triage(&b.root, needs(false, true)).unwrap();
    assert!(!dir.join("check").exists() && dir.join("assess").exists());
}
