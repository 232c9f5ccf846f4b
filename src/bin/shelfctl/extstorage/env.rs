//! What Ganeti hands an ExtStorage script: its environment, read into typed values.
//!
//! Pure: no I/O. The variables and their meaning are those of `ganeti-extstorage-interface(7)`
//! and of Ganeti's `lib/storage/extstorage.py` (`_ExtStorageEnvironment`), which sets
//! `VOL_NAME` always, `VOL_SIZE`/`VOL_NEW_SIZE` in MiB, `VOL_METADATA`, `VOL_CNAME`,
//! `VOL_UUID`, `VOL_SNAPSHOT_NAME`, `VOL_SNAPSHOT_SIZE`, `VOL_OPEN_EXCLUSIVE` when they
//! apply, and one `EXTP_<NAME>` per disk parameter (the name upper-cased).

use std::collections::BTreeMap;

/// One mebibyte: Ganeti's unit for every size it passes.
pub const MIB: u64 = 1 << 20;

/// The actions of the interface: the scripts a provider directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Provision a new volume.
    Create,
    /// Map the volume to a block device on this node; print its path.
    Attach,
    /// Undo attach.
    Detach,
    /// Delete the volume and its data.
    Remove,
    /// Grow the volume to `VOL_NEW_SIZE`.
    Grow,
    /// Store `VOL_METADATA` with the volume.
    Setinfo,
    /// Check the parameters.
    Verify,
    /// Snapshot the volume as `VOL_SNAPSHOT_NAME` (optional script).
    Snapshot,
    /// Make the volume ready for I/O (optional script).
    Open,
    /// The volume will no longer be used for I/O (optional script).
    Close,
}

impl Action {
    /// Every action, in the man page's order: required scripts, then optional ones.
    pub const ALL: [Action; 10] = [
        Action::Create,
        Action::Attach,
        Action::Detach,
        Action::Remove,
        Action::Grow,
        Action::Setinfo,
        Action::Verify,
        Action::Snapshot,
        Action::Open,
        Action::Close,
    ];

    /// The script's file name.
    pub fn name(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Attach => "attach",
            Action::Detach => "detach",
            Action::Remove => "remove",
            Action::Grow => "grow",
            Action::Setinfo => "setinfo",
            Action::Verify => "verify",
            Action::Snapshot => "snapshot",
            Action::Open => "open",
            Action::Close => "close",
        }
    }

    /// The action a script name stands for; `None` for anything else (the reviewer of
    /// Ganeti's interface asked for action names to be validated).
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == s)
    }
}

/// The disk parameters (`EXTP_*`) this provider understands, with the line
/// `parameters.list` gives each.
pub const PARAMETERS: &[(&str, &str)] = &[
    ("pool", "shelf pool holding the volume (default: shelfd's default pool)"),
    ("socket", "path of shelfd's management socket (default: /run/shelf/shelf.sock)"),
    (
        "initiator",
        "iSCSI initiator name KVM uses; attach then prints a kvm:iscsi:// URI when the volume is exported over iSCSI",
    ),
    (
        "access",
        "kernelspace (default) or userspace; with userspace a failure to give the iSCSI URI fails attach",
    ),
];

/// The environment of one script run, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GanetiEnv {
    /// `VOL_NAME`: `<uuid>.ext.disk<N>`, Ganeti's unique name of the volume.
    pub vol_name: Option<String>,
    /// `VOL_SIZE` in bytes.
    pub size: Option<u64>,
    /// `VOL_NEW_SIZE` in bytes.
    pub new_size: Option<u64>,
    /// `VOL_METADATA` (Ganeti sends `originstname+<instance>`).
    pub metadata: Option<String>,
    /// `VOL_CNAME`: the disk's human-readable name.
    pub cname: Option<String>,
    /// `VOL_UUID`: the disk's uuid in Ganeti's configuration.
    pub uuid: Option<String>,
    /// `VOL_SNAPSHOT_NAME`.
    pub snapshot_name: Option<String>,
    /// `VOL_SNAPSHOT_SIZE` in bytes.
    pub snapshot_size: Option<u64>,
    /// `VOL_OPEN_EXCLUSIVE` (`True`/`False`, as Python prints a bool).
    pub open_exclusive: Option<bool>,
    /// `EXTP_<NAME>` → value, the name lower-cased back.
    pub params: BTreeMap<String, String>,
}

/// Read a size in MiB as Ganeti prints it (a decimal integer) into bytes.
pub fn parse_mib(var: &str, s: &str) -> Result<u64, String> {
    let mib: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{var}={s:?} is not a whole number of MiB"))?;
    if mib == 0 {
        return Err(format!("{var} must be at least 1 MiB"));
    }
    mib.checked_mul(MIB)
        .ok_or_else(|| format!("{var}={s} MiB is too large"))
}

fn parse_bool(var: &str, s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("{var}={s:?} is not True or False")),
    }
}

impl GanetiEnv {
    /// Parse the variables Ganeti sets; any other variable is ignored. A value that is
    /// present but malformed is an error, so a bad size never becomes a default.
    pub fn parse<I: IntoIterator<Item = (String, String)>>(vars: I) -> Result<GanetiEnv, String> {
        let mut e = GanetiEnv::default();
        for (k, v) in vars {
            let nonempty = || (!v.is_empty()).then(|| v.clone());
            match k.as_str() {
                "VOL_NAME" => e.vol_name = nonempty(),
                "VOL_SIZE" => e.size = Some(parse_mib(&k, &v)?),
                "VOL_NEW_SIZE" => e.new_size = Some(parse_mib(&k, &v)?),
                "VOL_METADATA" => e.metadata = Some(v.clone()),
                "VOL_CNAME" => e.cname = nonempty(),
                "VOL_UUID" => e.uuid = nonempty(),
                "VOL_SNAPSHOT_NAME" => e.snapshot_name = nonempty(),
                "VOL_SNAPSHOT_SIZE" => e.snapshot_size = Some(parse_mib(&k, &v)?),
                "VOL_OPEN_EXCLUSIVE" => e.open_exclusive = Some(parse_bool(&k, &v)?),
                _ => {
                    if let Some(p) = k.strip_prefix("EXTP_") {
                        e.params.insert(p.to_ascii_lowercase(), v.clone());
                    }
                }
            }
        }
        Ok(e)
    }

    /// `VOL_NAME`, required by every action that names a volume.
    pub fn vol_name(&self) -> Result<&str, String> {
        self.vol_name
            .as_deref()
            .ok_or_else(|| "VOL_NAME is not set".to_string())
    }

    /// A parameter's value, when set and non-empty.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Parameters this provider does not know (Ganeti refuses them at `gnt-instance add`
    /// already, since `parameters.list` does not declare them).
    pub fn unknown_params(&self) -> Vec<String> {
        self.params
            .keys()
            .filter(|k| !PARAMETERS.iter().any(|(p, _)| p == k))
            .map(|k| format!("EXTP_{}", k.to_ascii_uppercase()))
            .collect()
    }

    /// Whether attach must give a userspace URI (`EXTP_ACCESS=userspace`).
    pub fn userspace(&self) -> Result<bool, String> {
        match self.param("access") {
            None | Some("kernelspace") => Ok(false),
            Some("userspace") => Ok(true),
            Some(other) => Err(format!(
                "EXTP_ACCESS={other:?} must be kernelspace or userspace"
            )),
        }
    }
}

/// The shelf share (or snapshot) name for a Ganeti volume name.
///
/// Ganeti's names (`<uuid>.ext.disk<N>`, 46 characters for disk 0; `<that>.snap` for a
/// snapshot) fit shelf's name rule, so they are used as they are and the share is found
/// by Ganeti's own name. A name that does not fit (too long, other characters) maps to
/// `ganeti-` and the first 40 hex digits of its SHA-256: deterministic, so every action
/// finds the same share; the original name is kept in the share's metadata
/// (`ganeti.name`).
pub fn share_name(vol_name: &str) -> String {
    if shelf::model::validate_name("share", vol_name).is_ok() {
        return vol_name.to_string();
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(vol_name.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("ganeti-{}", &hex[..40])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<GanetiEnv, String> {
        GanetiEnv::parse(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn parses_what_ganeti_sets() {
        let e = env(&[
            ("VOL_NAME", "0c5a0d38-7a09-4d1c-9f8b-3e8b5c0a1d2e.ext.disk0"),
            ("VOL_SIZE", "1024"),
            ("VOL_CNAME", "data"),
            ("VOL_UUID", "5b8e0d1c"),
            ("EXTP_POOL", "fast"),
            ("VOL_OPEN_EXCLUSIVE", "False"),
            ("PATH", "/usr/bin"),
        ])
        .unwrap();
        assert_eq!(e.size, Some(1024 * MIB));
        assert_eq!(e.param("pool"), Some("fast"));
        assert_eq!(e.open_exclusive, Some(false));
        assert_eq!(e.cname.as_deref(), Some("data"));
        assert!(e.unknown_params().is_empty());
    }

    #[test]
    fn refuses_bad_sizes_and_flags() {
        for bad in ["", "0", "-5", "1.5", "10G", "99999999999999999999"] {
            assert!(env(&[("VOL_SIZE", bad)]).is_err(), "{bad:?}");
        }
        assert!(env(&[("VOL_OPEN_EXCLUSIVE", "maybe")]).is_err());
        assert!(env(&[("EXTP_ACCESS", "sideways")])
            .unwrap()
            .userspace()
            .is_err());
        assert_eq!(
            env(&[("EXTP_COLOUR", "red")]).unwrap().unknown_params(),
            vec!["EXTP_COLOUR".to_string()]
        );
        assert!(env(&[]).unwrap().vol_name().is_err());
    }

    #[test]
    fn names_fit_or_map_deterministically() {
        let g = "0c5a0d38-7a09-4d1c-9f8b-3e8b5c0a1d2e.ext.disk12";
        assert_eq!(share_name(g), g);
        assert_eq!(share_name(&format!("{g}.snap")), format!("{g}.snap"));
        let long = "x".repeat(100);
        let m = share_name(&long);
        assert_eq!(m, share_name(&long));
        assert!(m.starts_with("ganeti-") && m.len() == 47);
        assert!(shelf::model::validate_name("share", &m).is_ok());
        assert_ne!(share_name("a/b"), share_name("a/c"));
    }

    #[test]
    fn actions_are_validated() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.name()), Some(a));
        }
        assert_eq!(Action::parse("install"), None);
        assert_eq!(Action::parse("Create"), None);
        assert_eq!(Action::parse("../create"), None);
    }
}
