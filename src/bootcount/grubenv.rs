//! GRUB's environment block (`/boot/grub/grubenv`): exactly 1024 bytes, the
//! line `# GRUB Environment Block`, then `NAME=VALUE` lines, padded with `#`.
//!
//! GRUB's `save_env` rewrites the file's own disk blocks in place, so the
//! file must keep its size and must not be sparse; this side never writes
//! into it but writes a whole new block beside it and renames it over
//! ([`crate::fsutil::write_atomic`]), so that a power cut leaves the old
//! block or the new one, never a torn one.

use std::path::Path;

use anyhow::{bail, Context, Result};

pub const SIZE: usize = 1024;
const HEADER: &str = "# GRUB Environment Block\n";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: Vec<(String, String)>,
}

impl Env {
    pub fn parse(bytes: &[u8]) -> Result<Env> {
        let text = String::from_utf8_lossy(bytes);
        let Some(body) = text.strip_prefix(HEADER) else {
            bail!("not a GRUB environment block (no header)");
        };
        let mut env = Env::default();
        for line in body.lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            if let Some((name, value)) = line.split_once('=') {
                // GRUB escapes a backslash and a newline with a backslash.
                let mut unescaped = String::new();
                let mut chars = value.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => unescaped.extend(chars.next()),
                        c => unescaped.push(c),
                    }
                }
                env.set(name, &unescaped);
            }
        }
        Ok(env)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, name: &str, value: &str) {
        match self.vars.iter_mut().find(|(n, _)| n == name) {
            Some(var) => var.1 = value.to_string(),
            None => self.vars.push((name.to_string(), value.to_string())),
        }
    }

    pub fn unset(&mut self, name: &str) {
        self.vars.retain(|(n, _)| n != name);
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut text = String::from(HEADER);
        for (name, value) in &self.vars {
            let escaped = value.replace('\\', "\\\\").replace('\n', "\\\n");
            text.push_str(&format!("{name}={escaped}\n"));
        }
        if text.len() > SIZE {
            bail!("the GRUB environment block would exceed {SIZE} bytes");
        }
        let mut bytes = text.into_bytes();
        bytes.resize(SIZE, b'#');
        Ok(bytes)
    }

    /// The block at `path`; an empty one when the file is missing.
    pub fn read(path: &Path) -> Result<Env> {
        match std::fs::read(path) {
            Ok(bytes) => Env::parse(&bytes).with_context(|| format!("Reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Env::default()),
            Err(e) => Err(e).with_context(|| format!("Reading {}", path.display())),
        }
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        crate::fsutil::write_atomic(path, &self.to_bytes()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_what_grub_editenv_writes() {
        // `grub-editenv grubenv create; grub-editenv grubenv set saved_entry=0`
        let mut block = format!("{HEADER}saved_entry=0\n").into_bytes();
        block.resize(SIZE, b'#');
        let mut env = Env::parse(&block).unwrap();
        assert_eq!(env.get("saved_entry"), Some("0"));
        env.set("aot_left", "2");
        env.set("odd", "a\\b");
        env.unset("saved_entry");
        let bytes = env.to_bytes().unwrap();
        assert_eq!(bytes.len(), SIZE);
        let again = Env::parse(&bytes).unwrap();
        assert_eq!(again, env);
        assert_eq!(again.get("odd"), Some("a\\b"));
        assert_eq!(again.get("saved_entry"), None);
    }

    #[test]
    fn refuses_what_is_not_a_block_or_does_not_fit() {
        assert!(Env::parse(b"saved_entry=0\n").is_err());
        let mut env = Env::default();
        env.set("big", &"x".repeat(SIZE));
        assert!(env.to_bytes().is_err());
    }
}
