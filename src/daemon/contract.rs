//! Checks every call against the IDL before the generated code sees it.
//!
//! The generated dispatcher ignores fields it does not know and reports type
//! errors with serde's wording. Like systemd's services, we reject unknown
//! fields and name the offending parameter in `InvalidParameter`.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;
use varlink_parser::{Typedef, VStruct, VStructOrEnum, VType, VTypeExt, IDL};

use crate::protocol;

pub struct Contract {
    interfaces: HashMap<&'static str, IDL<'static>>,
}

/// What the contract says about a method call.
pub enum Verdict {
    /// Not a method of ours (org.varlink.service, or unknown): let the service answer.
    Unchecked,
    Valid,
    InvalidParameter(String),
}

impl Contract {
    pub fn get() -> &'static Contract {
        static CONTRACT: OnceLock<Contract> = OnceLock::new();
        CONTRACT.get_or_init(|| {
            let mut interfaces = HashMap::new();
            for text in [
                protocol::SYSROOT_IDL,
                protocol::SERVICE_IDL,
                protocol::UPDATE_IDL,
            ] {
                let idl = IDL::try_from(text).expect("the IDL files parse (checked by tests)");
                interfaces.insert(idl.name, idl);
            }
            Contract { interfaces }
        })
    }

    pub fn check(&self, method: &str, parameters: &Value) -> Verdict {
        let Some((iface, name)) = method.rsplit_once('.') else {
            return Verdict::Unchecked;
        };
        let Some(idl) = self.interfaces.get(iface) else {
            return Verdict::Unchecked;
        };
        let Some(m) = idl.methods.get(name) else {
            return Verdict::Unchecked;
        };
        if let Err(field) = check_struct(idl, &m.input, parameters) {
            return Verdict::InvalidParameter(field);
        }
        Verdict::Valid
    }
}

/// Ok, or the name of the first field that does not fit.
fn check_struct(idl: &IDL, s: &VStruct, value: &Value) -> Result<(), String> {
    let Some(obj) = value.as_object() else {
        return Err("parameters".into());
    };
    if let Some(unknown) = obj
        .keys()
        .find(|k| !s.elts.iter().any(|a| a.name == k.as_str()))
    {
        return Err(unknown.clone());
    }
    for arg in &s.elts {
        let v = obj.get(arg.name).unwrap_or(&Value::Null);
        if !fits(idl, &arg.vtype, v) {
            return Err(arg.name.to_string());
        }
    }
    Ok(())
}

fn fits(idl: &IDL, t: &VTypeExt, v: &Value) -> bool {
    match t {
        VTypeExt::Option(inner) => v.is_null() || fits(idl, inner, v),
        VTypeExt::Array(inner) => v
            .as_array()
            .is_some_and(|a| a.iter().all(|e| fits(idl, inner, e))),
        VTypeExt::Dict(inner) => v
            .as_object()
            .is_some_and(|o| o.values().all(|e| fits(idl, inner, e))),
        VTypeExt::Plain(p) => match p {
            VType::Bool => v.is_boolean(),
            VType::Int => v.is_i64() || v.is_u64(),
            VType::Float => v.is_number(),
            VType::String => v.is_string(),
            VType::Object => v.is_object(),
            VType::Struct(s) => check_struct(idl, s, v).is_ok(),
            VType::Enum(e) => v.as_str().is_some_and(|s| e.elts.contains(&s)),
            VType::Typename(name) => match idl.typedefs.get(name) {
                Some(Typedef {
                    elt: VStructOrEnum::VStruct(s),
                    ..
                }) => check_struct(idl, s, v).is_ok(),
                Some(Typedef {
                    elt: VStructOrEnum::VEnum(e),
                    ..
                }) => v.as_str().is_some_and(|s| e.elts.contains(&s)),
                None => false,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn verdict(method: &str, params: Value) -> Result<(), String> {
        match Contract::get().check(method, &params) {
            Verdict::Valid => Ok(()),
            Verdict::InvalidParameter(p) => Err(p),
            Verdict::Unchecked => Err("unchecked".into()),
        }
    }

    #[test]
    fn accepts_well_typed_calls() {
        assert_eq!(
            verdict("org.aptostree.Sysroot.GetStatus", json!({})),
            Ok(())
        );
        assert_eq!(
            verdict(
                "org.aptostree.Sysroot.Install",
                json!({"packages": ["htop"]})
            ),
            Ok(())
        );
        assert_eq!(
            verdict("org.aptostree.Sysroot.Upgrade", json!({"check": null})),
            Ok(())
        );
    }

    #[test]
    fn names_the_bad_parameter() {
        let install = "org.aptostree.Sysroot.Install";
        assert_eq!(verdict(install, json!({})), Err("packages".into()));
        assert_eq!(
            verdict(install, json!({"packages": "htop"})),
            Err("packages".into())
        );
        assert_eq!(
            verdict(install, json!({"packages": [1]})),
            Err("packages".into())
        );
        assert_eq!(
            verdict(install, json!({"packages": [], "bogus": 1})),
            Err("bogus".into())
        );
        assert_eq!(
            verdict("org.aptostree.Sysroot.GetStatus", json!([])),
            Err("parameters".into())
        );
        assert_eq!(
            verdict("io.systemd.service.SetLogLevel", json!({"level": "x"})),
            Err("level".into())
        );
    }
}
