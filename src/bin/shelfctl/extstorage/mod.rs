//! `shelfctl extstorage <action>`: shelf as a Ganeti ExtStorage provider
//! (`ganeti-extstorage-interface(7)`; operator's guide in docs/ganeti.md).
//!
//! Input is the environment only, as Ganeti passes it. Success exits 0 (attach prints the
//! block device, then optionally a `kvm:` userspace URI); failure exits 1 with one line on
//! stderr naming the action and the volume.

mod env;
mod install;
mod loopdev;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::collections::BTreeMap;

use ciborium::Value;
use shelf::client::{get, get_text, get_u64, Client, ClientError};
use shelf::model::{Connector, Protocol};
use shelf::proto::{
    AttachArgs, PoolRef, Request, ShareCreateArgs, ShareDeleteArgs, ShareFilter, ShareRef,
    ShareResizeArgs, ShareSetMetadataArgs, SnapshotCreateArgs, SnapshotListArgs, SnapshotRef,
};

use env::{share_name, Action, GanetiEnv};

/// What a Ganeti volume name stands for in shelf.
#[derive(Debug)]
enum Target {
    /// A share: its id and the volume file.
    Share { id: String, file: PathBuf },
    /// A snapshot (Ganeti attaches and removes the snapshots it takes for backups).
    Snapshot { id: String, file: PathBuf },
}

impl Target {
    fn file(&self) -> &Path {
        match self {
            Target::Share { file, .. } | Target::Snapshot { file, .. } => file,
        }
    }
}

/// One run of one action.
struct Run {
    action: Action,
    env: GanetiEnv,
    socket: PathBuf,
}

const USAGE: &str = "usage: shelfctl extstorage {create|attach|detach|remove|grow|setinfo|verify|snapshot|open|close}\n       shelfctl extstorage install DIR [--shelfctl PATH] [--socket PATH]\nInput comes from the environment (VOL_NAME, VOL_SIZE, ..., EXTP_*); see docs/ganeti.md.";

fn remote(e: ClientError) -> String {
    e.to_string()
}

/// `shelfctl extstorage ARGS...`; `socket` is the global `--socket`, if given.
pub fn main(argv: &[String], socket: Option<PathBuf>) -> ExitCode {
    let Some(first) = argv.first() else {
        eprintln!(
            "shelf extstorage: no action given; {}",
            USAGE.lines().next().unwrap_or("")
        );
        return ExitCode::from(1);
    };
    if first == "-h" || first == "--help" {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if first == "install" {
        return run_install(&argv[1..], socket);
    }
    let Some(action) = Action::parse(first) else {
        eprintln!("shelf extstorage: unknown action {first:?}; expected one of create, attach, detach, remove, grow, setinfo, verify, snapshot, open, close, install");
        return ExitCode::from(1);
    };
    match argv.get(1).map(String::as_str) {
        None => {}
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!(
                "shelf extstorage {}: unexpected argument {other:?}; the input is the environment",
                action.name()
            );
            return ExitCode::from(1);
        }
    }
    let env = match GanetiEnv::parse(std::env::vars()) {
        Ok(e) => e,
        Err(m) => return fail(action, None, &m),
    };
    let socket = env
        .param("socket")
        .map(PathBuf::from)
        .or(socket)
        .or_else(|| std::env::var_os("SHELF_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/run/shelf/shelf.sock"));
    let run = Run {
        action,
        env,
        socket,
    };
    match run.execute() {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            for line in out {
                let _ = writeln!(stdout, "{line}");
            }
            ExitCode::SUCCESS
        }
        Err(m) => fail(action, run.env.vol_name.as_deref(), &m),
    }
}

fn fail(action: Action, vol: Option<&str>, message: &str) -> ExitCode {
    let message = message.replace('\n', " ");
    match vol {
        Some(v) => eprintln!("shelf extstorage {} {v}: {message}", action.name()),
        None => eprintln!("shelf extstorage {}: {message}", action.name()),
    }
    ExitCode::from(1)
}

fn run_install(argv: &[String], socket: Option<PathBuf>) -> ExitCode {
    let done = install::parse(argv, socket).and_then(|i| install::install(&i).map(|f| (i, f)));
    match done {
        Ok((i, files)) => {
            println!(
                "installed {} files in {} (running {})",
                files.len(),
                i.dir.display(),
                i.shelfctl.display()
            );
            ExitCode::SUCCESS
        }
        Err(m) => {
            eprintln!("shelf extstorage install: {m}");
            ExitCode::from(1)
        }
    }
}

impl Run {
    fn execute(&self) -> Result<Vec<String>, String> {
        if self.action != Action::Verify {
            self.env.vol_name()?;
        }
        self.env.userspace()?;
        let mut c = Client::connect(&self.socket).map_err(remote)?;
        match self.action {
            Action::Create => self.create(&mut c),
            Action::Attach => self.attach(&mut c),
            Action::Detach => self.detach(&mut c),
            Action::Remove => self.remove(&mut c),
            Action::Grow => self.grow(&mut c),
            Action::Setinfo => self.setinfo(&mut c),
            Action::Verify => self.verify(&mut c),
            Action::Snapshot => self.snapshot(&mut c),
            Action::Open | Action::Close => self.open_close(&mut c),
        }
    }

    /// The `pool` argument, when `EXTP_POOL` is set.
    fn pool_arg(&self) -> Option<String> {
        self.env.param("pool").map(str::to_string)
    }

    /// The share name for this volume.
    fn name(&self) -> Result<String, String> {
        Ok(share_name(self.env.vol_name()?))
    }

    /// The metadata that ties the share to Ganeti's configuration.
    fn ganeti_metadata(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        if let Some(v) = &self.env.vol_name {
            m.insert("ganeti.name".into(), v.clone());
        }
        if let Some(v) = &self.env.cname {
            m.insert("ganeti.cname".into(), v.clone());
        }
        if let Some(v) = &self.env.uuid {
            m.insert("ganeti.uuid".into(), v.clone());
        }
        m
    }

    fn create(&self, c: &mut Client) -> Result<Vec<String>, String> {
        let size = self.env.size.ok_or("VOL_SIZE is not set")?;
        let a = ShareCreateArgs {
            name: self.name()?,
            size,
            pool: self.pool_arg(),
            metadata: self.ganeti_metadata(),
            ..Default::default()
        };
        c.request(&Request::ShareCreate(a)).map_err(remote)?;
        Ok(vec![])
    }

    /// The share or snapshot this volume is; `None` when there is neither.
    fn resolve(&self, c: &mut Client) -> Result<Option<Target>, String> {
        let name = self.name()?;
        let a = ShareRef {
            share: name.clone(),
            pool: self.pool_arg(),
        };
        match c.request(&Request::ShareShow(a)) {
            Ok(share) => {
                if get_text(&share, "layout") == Some("filesystem") {
                    return Err(format!(
                        "share {name} is a formatted (filesystem) share mounted by shelfd; Ganeti needs a block share"
                    ));
                }
                let id = get_text(&share, "id").ok_or("share.show gave no id")?;
                // The pool knows where its volume is (a file, or an LV's device).
                let device = get_text(&share, "device")
                    .ok_or_else(|| format!("share {name} is in a pool shelfd does not run"))?;
                Ok(Some(Target::Share {
                    id: id.to_string(),
                    file: PathBuf::from(device),
                }))
            }
            Err(e) if e.code() == Some("not_found") => self.resolve_snapshot(c, &name),
            Err(e) => Err(remote(e)),
        }
    }

    fn resolve_snapshot(&self, c: &mut Client, name: &str) -> Result<Option<Target>, String> {
        let list = c
            .request(&Request::SnapshotList(SnapshotListArgs {
                share: None,
                pool: self.pool_arg(),
            }))
            .map_err(remote)?;
        let found: Vec<&Value> = list
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|s| get_text(s, "name") == Some(name))
                    .collect()
            })
            .unwrap_or_default();
        match found.as_slice() {
            [] => Ok(None),
            [s] => {
                let id = get_text(s, "id").ok_or("snapshot.list gave no id")?;
                let pool = get_text(s, "pool").ok_or("snapshot.list gave no pool")?;
                let dir = self.pool_path(c, pool)?;
                Ok(Some(Target::Snapshot {
                    id: id.to_string(),
                    file: dir.join("snapshots").join(id),
                }))
            }
            _ => Err(format!(
                "{} snapshots are named {name}; set EXTP_POOL or rename them",
                found.len()
            )),
        }
    }

    /// The directory of a file pool (snapshots are files in it); other kinds of pool keep
    /// snapshots as inactive LVs, which this provider does not attach.
    fn pool_path(&self, c: &mut Client, pool: &str) -> Result<PathBuf, String> {
        let p = c
            .request(&Request::PoolShow(PoolRef { name: pool.into() }))
            .map_err(remote)?;
        if get_text(&p, "kind") != Some("file") {
            return Err(format!(
                "pool {pool} is not a file pool; attaching its snapshots is not supported"
            ));
        }
        get_text(&p, "path")
            .map(PathBuf::from)
            .ok_or_else(|| format!("pool {pool} has no path"))
    }

    fn must_resolve(&self, c: &mut Client) -> Result<Target, String> {
        self.resolve(c)?.ok_or_else(|| {
            format!(
                "no share {} in {}",
                share_name(self.env.vol_name.as_deref().unwrap_or("")),
                self.env.param("pool").unwrap_or("shelf")
            )
        })
    }

    fn attach(&self, c: &mut Client) -> Result<Vec<String>, String> {
        let target = self.must_resolve(c)?;
        let read_only = matches!(target, Target::Snapshot { .. });
        let dev = loopdev::attach(target.file(), read_only)?;
        let mut out = vec![dev];
        if let Target::Share { id, .. } = &target {
            match self.iscsi_uri(c, id) {
                Ok(Some(uri)) => out.push(format!("kvm:{uri}")),
                Ok(None) => {}
                Err(m) if !self.env.userspace()? => {
                    eprintln!("shelf extstorage attach: no userspace URI: {m}")
                }
                Err(m) => return Err(m),
            }
        }
        Ok(out)
    }

    fn detach(&self, c: &mut Client) -> Result<Vec<String>, String> {
        let Some(target) = self.resolve(c)? else {
            return Ok(vec![]);
        };
        loopdev::detach(target.file())?;
        if let (Target::Share { id, .. }, Some(initiator)) = (&target, self.env.param("initiator"))
        {
            if self.iscsi_export(c, id)? {
                let a = iscsi_attach_args(id, initiator);
                c.request(&Request::ShareDetach(a)).map_err(remote)?;
            }
        }
        Ok(vec![])
    }

    fn remove(&self, c: &mut Client) -> Result<Vec<String>, String> {
        let Some(target) = self.resolve(c)? else {
            return Ok(vec![]);
        };
        loopdev::detach(target.file())?;
        let r = match &target {
            Target::Share { id, .. } => Request::ShareDelete(ShareDeleteArgs {
                share: id.clone(),
                pool: None,
                recursive: true,
                force: true,
            }),
            Target::Snapshot { id, .. } => Request::SnapshotDelete(SnapshotRef {
                snapshot: id.clone(),
                ..Default::default()
            }),
        };
        match c.request(&r) {
            Err(e) if e.code() != Some("not_found") => Err(remote(e)),
            _ => Ok(vec![]),
        }
    }

    fn share_id(&self, c: &mut Client) -> Result<(String, PathBuf), String> {
        match self.must_resolve(c)? {
            Target::Share { id, file } => Ok((id, file)),
            Target::Snapshot { .. } => {
                Err("this volume is a snapshot; only shares can be changed".into())
            }
        }
    }

    fn grow(&self, c: &mut Client) -> Result<Vec<String>, String> {
        let new_size = self.env.new_size.ok_or("VOL_NEW_SIZE is not set")?;
        if let Some(size) = self.env.size {
            if new_size < size {
                return Err(format!(
                    "VOL_NEW_SIZE ({} MiB) is smaller than VOL_SIZE ({} MiB); shelf only grows",
                    new_size >> 20,
                    size >> 20
                ));
            }
        }
        let (id, file) = self.share_id(c)?;
        let a = ShareResizeArgs {
            share: id,
            size: new_size,
            pool: None,
        };
        c.request(&Request::ShareResize(a)).map_err(remote)?;
        loopdev::refresh(&file)?;
        Ok(vec![])
    }

    fn setinfo(&self, c: &mut Client) -> Result<Vec<String>, String> {
        let meta = self
            .env
            .metadata
            .as_deref()
            .ok_or("VOL_METADATA is not set")?;
        let (id, _) = self.share_id(c)?;
        let mut metadata = self.ganeti_metadata();
        metadata.insert("ganeti.metadata".into(), meta.into());
        let a = ShareSetMetadataArgs {
            share: id,
            metadata,
            ..Default::default()
        };
        c.request(&Request::ShareSetMetadata(a)).map_err(remote)?;
        Ok(vec![])
    }

    fn verify(&self, c: &mut Client) -> Result<Vec<String>, String> {
        let unknown = self.env.unknown_params();
        if !unknown.is_empty() {
            return Err(format!(
                "unknown parameter(s) {}; see parameters.list",
                unknown.join(", ")
            ));
        }
        if let Some(pool) = self.env.param("pool") {
            self.pool_path(c, pool)?;
        }
        if self.env.vol_name.is_some() {
            self.must_resolve(c)?;
        }
        Ok(vec![])
    }

    fn snapshot(&self, c: &mut Client) -> Result<Vec<String>, String> {
        let (id, _) = self.share_id(c)?;
        let name = match &self.env.snapshot_name {
            Some(n) => share_name(n),
            None => share_name(&format!("{}.snap", self.env.vol_name()?)),
        };
        let a = SnapshotCreateArgs {
            share: id,
            name,
            pool: None,
        };
        c.request(&Request::SnapshotCreate(a)).map_err(remote)?;
        Ok(vec![])
    }

    /// open and close: shelf has nothing to do (a share is usable while it exists; its
    /// single-attach rule already gives exclusive access), but the volume must exist.
    fn open_close(&self, c: &mut Client) -> Result<Vec<String>, String> {
        self.must_resolve(c)?;
        Ok(vec![])
    }

    fn iscsi_export(&self, c: &mut Client, share_id: &str) -> Result<bool, String> {
        let list = c
            .request(&Request::ExportList(ShareFilter {
                share: Some(share_id.into()),
                pool: None,
            }))
            .map_err(remote)?;
        Ok(list
            .as_array()
            .is_some_and(|a| a.iter().any(|e| get_text(e, "protocol") == Some("iscsi"))))
    }

    /// `iscsi://[user%secret@]portal/iqn/lun` for KVM when `EXTP_INITIATOR` is set and the
    /// share is exported over iSCSI (granting that initiator through `share.attach`).
    fn iscsi_uri(&self, c: &mut Client, share_id: &str) -> Result<Option<String>, String> {
        let Some(initiator) = self.env.param("initiator") else {
            return if self.env.userspace()? {
                Err("EXTP_INITIATOR is not set".into())
            } else {
                Ok(None)
            };
        };
        if !self.iscsi_export(c, share_id)? {
            return if self.env.userspace()? {
                Err("the share has no iSCSI export".into())
            } else {
                Ok(None)
            };
        }
        let a = iscsi_attach_args(share_id, initiator);
        let r = c.request(&Request::ShareAttach(a)).map_err(remote)?;
        let data = get(&r, "connection_info")
            .and_then(|ci| get(ci, "data"))
            .ok_or("share.attach gave no connection_info")?;
        Ok(Some(uri_of(data)?))
    }
}

/// Attach or detach `share` over iSCSI for this node and the initiator KVM presents.
fn iscsi_attach_args(share: &str, initiator: &str) -> AttachArgs {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    AttachArgs {
        share: share.into(),
        pool: None,
        connector: Connector {
            host,
            ip: None,
            initiator: Some(initiator.into()),
            nqn: None,
        },
        protocol: Some(Protocol::Iscsi),
        mode: None,
    }
}

/// Percent-encode all but RFC 3986's unreserved characters.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// QEMU's iSCSI URI from an iSCSI `connection_info.data`.
fn uri_of(data: &Value) -> Result<String, String> {
    let portal = get_text(data, "target_portal").ok_or("no target_portal")?;
    let iqn = get_text(data, "target_iqn").ok_or("no target_iqn")?;
    let lun = get_u64(data, "target_lun").ok_or("no target_lun")?;
    let auth = match (
        get_text(data, "auth_username"),
        get_text(data, "auth_password"),
    ) {
        (Some(u), Some(p)) => format!("{}%{}@", pct(u), pct(p)),
        _ => String::new(),
    };
    Ok(format!("iscsi://{auth}{portal}/{iqn}/{lun}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shelf::client::args;

    fn text(s: &str) -> Value {
        Value::Text(s.to_string())
    }

    #[test]
    fn builds_qemu_iscsi_uris() {
        let data = args(vec![
            ("target_portal", text("127.0.0.1:3260")),
            ("target_iqn", text("iqn.2026-11.org.example.shelf:vol1")),
            ("target_lun", Value::Integer(1.into())),
            ("auth_username", text("shelf-ab")),
            ("auth_password", text("p@ss/w%rd")),
        ]);
        assert_eq!(
            uri_of(&data).unwrap(),
            "iscsi://shelf-ab%p%40ss%2Fw%25rd@127.0.0.1:3260/iqn.2026-11.org.example.shelf:vol1/1"
        );
        let open = args(vec![
            ("target_portal", text("10.0.0.1:3260")),
            ("target_iqn", text("iqn.x:y")),
            ("target_lun", Value::Integer(1.into())),
        ]);
        assert_eq!(uri_of(&open).unwrap(), "iscsi://10.0.0.1:3260/iqn.x:y/1");
        assert!(uri_of(&args(vec![])).is_err());
    }
}
