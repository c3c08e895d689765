//! Editing kernel command lines, with rpm-ostree's semantics.
//!
//! Deletions apply first, then replacements, then appends. `append` adds
//! `KEY[=VALUE]` at the end (keys may repeat, as `console=` does). `delete`
//! takes `KEY=VALUE` (that exact argument) or `KEY` (the key, when it has one
//! value). `replace` takes `KEY=NEW` (a key with one value) or `KEY=OLD=NEW`.
//! Anything else is a typed error naming the argument: nothing half-applies.

use crate::error::Error;

fn invalid(argument: &str, reason: &str) -> Error {
    Error::InvalidKernelArgument {
        argument: argument.to_string(),
        reason: reason.to_string(),
    }
}

/// Reject what no kernel command line may contain.
pub fn validate(argument: &str) -> Result<(), Error> {
    if argument.is_empty() {
        return Err(invalid(argument, "empty argument"));
    }
    if argument.chars().any(|c| c.is_control()) {
        return Err(invalid(
            argument,
            "contains a newline, NUL or other control character",
        ));
    }
    if argument.chars().any(char::is_whitespace) && !argument.contains('"') {
        return Err(invalid(argument, "contains whitespace (quote the value)"));
    }
    if argument.starts_with('=') {
        return Err(invalid(argument, "has no key"));
    }
    if argument.starts_with("ostree=") {
        return Err(invalid(argument, "ostree= is managed by ostree itself"));
    }
    Ok(())
}

fn key(argument: &str) -> &str {
    argument.split_once('=').map_or(argument, |(k, _)| k)
}

/// Apply deletions, replacements and appends to `current`.
pub fn edit(
    current: &[String],
    append: &[String],
    delete: &[String],
    replace: &[String],
) -> Result<Vec<String>, Error> {
    for a in append.iter().chain(delete).chain(replace) {
        validate(a)?;
    }
    let mut args: Vec<String> = current.to_vec();
    for d in delete {
        if d.contains('=') {
            let pos = args
                .iter()
                .position(|a| a == d)
                .ok_or_else(|| invalid(d, "not present"))?;
            args.remove(pos);
        } else {
            let matching: Vec<usize> = (0..args.len()).filter(|&i| key(&args[i]) == d).collect();
            match matching.as_slice() {
                [] => return Err(invalid(d, "not present")),
                [i] => {
                    args.remove(*i);
                }
                _ => {
                    return Err(invalid(
                        d,
                        "has several values; name the one to delete as KEY=VALUE",
                    ))
                }
            }
        }
    }
    for r in replace {
        let Some((k, rest)) = r.split_once('=') else {
            return Err(invalid(r, "expected KEY=VALUE or KEY=OLD=NEW"));
        };
        let matching: Vec<usize> = (0..args.len()).filter(|&i| key(&args[i]) == k).collect();
        // KEY=OLD=NEW names the argument KEY=OLD; when there is no such
        // argument, a value may itself contain '=' (root=UUID=...): KEY=VALUE.
        let old_new = rest.split_once('=').and_then(|(old, new)| {
            let wanted = format!("{k}={old}");
            matching
                .iter()
                .copied()
                .find(|&i| args[i] == wanted)
                .map(|i| (i, new))
        });
        let (index, new_value) = match (old_new, matching.as_slice()) {
            (Some(found), _) => found,
            (None, [i]) => (*i, rest),
            (None, []) => return Err(invalid(r, "not present")),
            (None, _) => return Err(invalid(r, "has several values; use KEY=OLD=NEW")),
        };
        args[index] = format!("{k}={new_value}");
    }
    args.extend(append.iter().cloned());
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn deletes_then_replaces_then_appends() {
        let current = v(&["root=UUID=1", "quiet", "console=tty0", "console=ttyS0"]);
        let out = edit(
            &current,
            &v(&["splash"]),
            &v(&["quiet", "console=tty0"]),
            &v(&["root=UUID=2"]),
        )
        .unwrap();
        assert_eq!(out, v(&["root=UUID=2", "console=ttyS0", "splash"]));
        let out = edit(&current, &[], &[], &v(&["console=ttyS0=ttyS1"])).unwrap();
        assert_eq!(out[3], "console=ttyS1");
    }

    #[test]
    fn refuses_nonsense_and_changes_nothing() {
        let current = v(&["quiet", "console=tty0", "console=ttyS0"]);
        for (append, delete, replace) in [
            (v(&["a\nb"]), v(&[]), v(&[])),
            (v(&["a\0b"]), v(&[]), v(&[])),
            (v(&[""]), v(&[]), v(&[])),
            (v(&["=x"]), v(&[]), v(&[])),
            (v(&["ostree=/x"]), v(&[]), v(&[])),
            (v(&[]), v(&["absent"]), v(&[])),
            (v(&[]), v(&["console"]), v(&[])),
            (v(&[]), v(&[]), v(&["console=x"])),
            (v(&[]), v(&[]), v(&["nokey"])),
            (v(&[]), v(&[]), v(&["absent=a=b"])),
        ] {
            let e = edit(&current, &append, &delete, &replace).unwrap_err();
            assert!(matches!(e, Error::InvalidKernelArgument { .. }), "{e}");
        }
    }
}
