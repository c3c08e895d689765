//! The typed errors: one table for the engines, the wire and the CLI.
//!
//! Each variant is an error of `interfaces/org.aptostree.Sysroot.varlink`:
//! its name is the IDL error's name and its fields are the IDL error's
//! parameters (serde writes them under the IDL's names), and its message is
//! what the CLI prints. The daemon serialises a variant into the Varlink
//! error reply ([`Error::to_wire`]); the CLI deserialises the reply into the
//! same variant ([`Error::from_wire`]) and prints it. Adding an error is one
//! variant here plus its line in the IDL; a test checks the two agree.
//!
//! Engines use `anyhow` with context internally and raise one of these where a
//! caller must be able to tell the case apart. Because `anyhow` keeps the
//! original error under its context layers, [`Error::classify`] recovers the
//! variant however much context was added on the way up.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The interface whose errors these are (the Update interface reuses them).
pub const INTERFACE: &str = "org.aptostree.Sysroot";

/// A transaction as other callers see it: the IDL's `Transaction`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionInfo {
    pub id: String,
    pub method: String,
    pub title: String,
    pub initiator_uid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator_pid: Option<i32>,
    pub started_usec: u64,
    pub cancelling: bool,
}

#[derive(Debug, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", content = "parameters")]
pub enum Error {
    #[error("{} is not an OSTree sysroot: {reason}", path.display())]
    NotASysroot { path: PathBuf, reason: String },
    #[error(
        "transaction {} ({}) is already running; use `apt-ostree cancel` or wait",
        transaction.id,
        transaction.title
    )]
    TransactionInProgress { transaction: Box<TransactionInfo> },
    #[error("no transaction is running")]
    NoTransaction {},
    #[error("transaction {transaction} was cancelled")]
    Cancelled { transaction: String },
    #[error("{reason}")]
    NoDeployment { reason: String },
    #[error("invalid refspec {refspec:?}: {reason}")]
    InvalidRefspec { refspec: String, reason: String },
    #[error("revision {revision:?} not found: {reason}")]
    RevisionNotFound { revision: String, reason: String },
    #[error("refusing to go back from {current} to {target}; pass --allow-downgrade")]
    DowngradeRefused { current: String, target: String },
    #[error("{path}: {reason}")]
    InvalidUpdateDirectory { path: String, reason: String },
    #[error("the update {update} failed to boot on {} and was rolled back; `apt-ostree upgrade --retry-failed` deploys it anyway, `apt-ostree cleanup --boot-failures` forgets it", format_time(*failed_at))]
    UpdateFailedToBoot {
        update: String,
        #[serde(rename = "failedAt")]
        failed_at: i64,
    },
    #[error("invalid kernel argument {argument:?}: {reason}")]
    InvalidKernelArgument { argument: String, reason: String },
    #[error("invalid update-initramfs argument {argument:?}: {reason}")]
    InvalidInitramfsArgument { argument: String, reason: String },
    #[error("fetching from {remote} failed: {reason}")]
    FetchFailed { remote: String, reason: String },
    #[error("signature check failed for {remote}: {reason}")]
    SignatureInvalid { remote: String, reason: String },
    #[error("invalid package name {name:?}: {reason}")]
    InvalidPackageName { name: String, reason: String },
    #[error("packages not found: {}", packages.join(", "))]
    PackageNotFound { packages: Vec<String> },
    #[error("{reason}")]
    NoPackageLists { reason: String },
    #[error("already requested: {} (use --idempotent to accept that)", packages.join(", "))]
    PackageAlreadyRequested { packages: Vec<String> },
    #[error("already in the base image: {}", packages.join(", "))]
    PackageInBase { packages: Vec<String> },
    #[error("not requested: {}", packages.join(", "))]
    PackageNotRequested { packages: Vec<String> },
    #[error("not in the base image: {}", packages.join(", "))]
    PackageNotInBase { packages: Vec<String> },
    #[error("cannot satisfy dependencies:\n{explanation}")]
    DependencyProblem { explanation: String },
    #[error("invalid package file {path}: {reason}")]
    InvalidPackageFile { path: String, reason: String },
    #[error("{script} of {package} failed (exit status {exit_status}):\n{output}")]
    ScriptFailed {
        package: String,
        script: String,
        #[serde(rename = "exitStatus")]
        exit_status: i32,
        output: String,
    },
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidImageReference { reference: String, reason: String },
    #[error("fetching the image {image} failed: {reason}")]
    ImageFetchFailed { image: String, reason: String },
    #[error("the image {image} cannot be deployed: {reason}")]
    ImageNotDeployable { image: String, reason: String },
    #[error("not supported: {reason}")]
    NotSupported { reason: String },
    #[error("{reason}{}", if packages.is_empty() { String::new() } else { format!(": {}", packages.join(", ")) })]
    LiveChangeRefused {
        reason: String,
        packages: Vec<String>,
    },
    /// Anything else, with its whole chain of causes (the IDL's `Failed`).
    #[error(transparent)]
    #[serde(rename = "Failed", with = "failed")]
    Other(anyhow::Error),
}

/// `Other` on the wire: `Failed (message: string)`, the chain in one line.
mod failed {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Failed {
        message: String,
    }

    pub fn serialize<S: Serializer>(e: &anyhow::Error, s: S) -> Result<S::Ok, S::Error> {
        Failed {
            message: format!("{e:#}"),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<anyhow::Error, D::Error> {
        Ok(anyhow::Error::msg(Failed::deserialize(d)?.message))
    }
}

impl Error {
    /// Recover the typed variant raised somewhere below, or wrap the whole chain.
    pub fn classify(err: anyhow::Error) -> Error {
        match err.downcast::<Error>() {
            Ok(typed) => typed,
            Err(other) => Error::Other(other),
        }
    }

    /// The Varlink error reply: its qualified name and its parameters.
    pub fn to_wire(&self) -> (String, Option<serde_json::Value>) {
        let mut tagged = serde_json::to_value(self).unwrap_or_else(
            |e| serde_json::json!({"error": "Failed", "parameters": {"message": e.to_string()}}),
        );
        let name = tagged["error"].as_str().unwrap_or("Failed").to_string();
        let parameters = tagged.get_mut("parameters").map(serde_json::Value::take);
        (format!("{INTERFACE}.{name}"), parameters)
    }

    /// The error a Varlink error reply stands for, if it is one of ours.
    pub fn from_wire(name: &str, parameters: Option<&serde_json::Value>) -> Option<Error> {
        let short = name.strip_prefix(INTERFACE)?.strip_prefix('.')?;
        let mut tagged = serde_json::json!({ "error": short });
        if let Some(p) = parameters {
            tagged["parameters"] = p.clone();
        }
        serde_json::from_value(tagged).ok()
    }
}

/// Seconds since the epoch: how records (cached updates, boot failures) keep times.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seconds since the epoch as an RFC 3339 UTC time, as messages and status show times.
pub fn format_time(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| seconds.to_string())
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use varlink_parser::{VStruct, VStructOrEnum, VType, VTypeExt, IDL};

    /// A value of the IDL type `t`, optional fields present so that each is checked.
    fn sample(idl: &IDL, t: &VTypeExt) -> Value {
        match t {
            VTypeExt::Array(e) => json!([sample(idl, e)]),
            VTypeExt::Dict(e) => json!({ "key": sample(idl, e) }),
            VTypeExt::Option(e) => sample(idl, e),
            VTypeExt::Plain(VType::Bool) => json!(true),
            VTypeExt::Plain(VType::Int) => json!(7),
            VTypeExt::Plain(VType::Float) => json!(0.5),
            VTypeExt::Plain(VType::String) => json!("text"),
            VTypeExt::Plain(VType::Object) => json!({}),
            VTypeExt::Plain(VType::Struct(s)) => sample_struct(idl, s),
            VTypeExt::Plain(VType::Enum(e)) => json!(e.elts[0]),
            VTypeExt::Plain(VType::Typename(name)) => match &idl.typedefs[name].elt {
                VStructOrEnum::VStruct(s) => sample_struct(idl, s),
                VStructOrEnum::VEnum(e) => json!(e.elts[0]),
            },
        }
    }

    fn sample_struct(idl: &IDL, s: &VStruct) -> Value {
        Value::Object(
            s.elts
                .iter()
                .map(|a| (a.name.to_string(), sample(idl, &a.vtype)))
                .collect(),
        )
    }

    #[test]
    fn every_idl_error_is_one_variant_with_the_same_parameters() {
        let idl = IDL::try_from(crate::protocol::SYSROOT_IDL).unwrap();
        assert_eq!(idl.name, INTERFACE);
        for name in &idl.error_keys {
            let parameters = sample_struct(&idl, &idl.errors[name].parm);
            let qualified = format!("{INTERFACE}.{name}");
            let err = Error::from_wire(&qualified, Some(&parameters))
                .unwrap_or_else(|| panic!("no variant takes {qualified} {parameters}"));
            // Nothing dropped, renamed or added on the way back.
            assert_eq!(err.to_wire(), (qualified, Some(parameters)), "{name}");
            assert!(!err.to_string().is_empty());
        }
        assert!(Error::from_wire("org.varlink.service.MethodNotFound", None).is_none());
        assert!(Error::from_wire("org.aptostree.Sysroot.NoSuchError", None).is_none());
    }

    #[test]
    fn context_does_not_hide_the_variant_and_other_errors_are_failed() {
        let typed = anyhow::Error::from(Error::PackageNotFound {
            packages: vec!["htop".into()],
        })
        .context("Resolving");
        let (name, parameters) = Error::classify(typed).to_wire();
        assert_eq!(name, "org.aptostree.Sysroot.PackageNotFound");
        assert_eq!(parameters, Some(json!({ "packages": ["htop"] })));
        let other = anyhow::anyhow!("disk full").context("Writing the commit");
        let (name, parameters) = Error::classify(other).to_wire();
        assert_eq!(name, "org.aptostree.Sysroot.Failed");
        assert_eq!(
            parameters,
            Some(json!({ "message": "Writing the commit: disk full" }))
        );
    }
}
