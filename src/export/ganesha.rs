//! NFS through nfs-ganesha: shelfd owns one file of EXPORT blocks, which ganesha's main
//! config includes (`%include "/etc/ganesha/shelf-exports.conf"`), rewrites it atomically
//! and makes the running ganesha.nfsd re-read it with SIGHUP: exports are added, updated
//! and removed without a restart. Bursts are coalesced into one write and one signal.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::coalesce::Coalescer;
use super::{action, write_atomically, BoxFut, ExportSpec, Exporter, Finding};
use crate::error::{Error, Result};
use crate::model::{Access, Driver, Export};
use crate::sys::cmd::find_program;
use crate::sys::process::{hup_pidfile, pidfile_alive};

/// The pseudo path (NFSv4) of a share: `/shelf/<share-id>`.
pub fn pseudo_path(spec: &ExportSpec) -> String {
    pseudo_path_of(&spec.export.share)
}

/// The pseudo path of the share with this id: where NFSv4 clients find the export (they
/// walk ganesha's pseudo filesystem, which knows nothing of the directory's real path).
pub fn pseudo_path_of(share_id: &str) -> String {
    format!("/shelf/{share_id}")
}

/// The EXPORT block of one export, or `None` when nobody may mount it yet.
pub fn export_block(spec: &ExportSpec) -> Option<String> {
    let e = &spec.export;
    let clients = e.allowed_with_access();
    if clients.is_empty() {
        return None;
    }
    let id = e.fsid?;
    let mut s = format!(
        "EXPORT {{\n    Export_Id = {id};\n    Path = \"{}\";\n    Pseudo = \"{}\";\n    \
         Protocols = 3, 4;\n    Transports = TCP;\n    SecType = sys;\n    Access_Type = None;\n    \
         Squash = {};\n    Filesystem_Id = {id}.{id};\n    FSAL {{\n        Name = VFS;\n    }}\n",
        spec.path.display(),
        pseudo_path(spec),
        if e.options.root_squash { "Root_Squash" } else { "No_Root_Squash" },
    );
    for access in [Access::Rw, Access::Ro] {
        let list: Vec<&str> = clients
            .iter()
            .filter(|(_, a)| *a == access)
            .map(|(c, _)| c.as_str())
            .collect();
        if !list.is_empty() {
            s.push_str(&format!(
                "    CLIENT {{\n        Clients = {};\n        Access_Type = {};\n    }}\n",
                list.join(", "),
                access.as_str().to_uppercase()
            ));
        }
    }
    s.push_str("}\n");
    Some(s)
}

/// The whole included file.
pub fn exports_conf(set: &BTreeMap<String, ExportSpec>) -> String {
    let mut out =
        String::from("# Written by shelfd. Do not edit: this file is rewritten on every change.\n");
    let mut blocks: Vec<String> = set.values().filter_map(export_block).collect();
    blocks.sort();
    for b in blocks {
        out.push_str(&b);
    }
    out
}

/// The ganesha driver.
#[derive(Debug)]
pub struct GaneshaExporter {
    file: PathBuf,
    pidfile: PathBuf,
    state: Coalescer,
}

impl GaneshaExporter {
    /// A driver owning `file`, reloading the ganesha whose pid is in `pidfile`.
    pub fn new(file: PathBuf, pidfile: PathBuf) -> Self {
        GaneshaExporter {
            file,
            pidfile,
            state: Coalescer::default(),
        }
    }

    async fn write_and_reload(&self, set: BTreeMap<String, ExportSpec>) -> Result<()> {
        let text = exports_conf(&set);
        log::debug!(
            "ganesha: writing {} export(s) to {} and sending SIGHUP",
            set.len(),
            self.file.display()
        );
        let (file, pidfile) = (self.file.clone(), self.pidfile.clone());
        smol::unblock(move || -> Result<()> {
            write_atomically(&file, &text, 0o644)
                .map_err(|e| Error::io(format!("writing {}", file.display()), e))?;
            hup_pidfile(&pidfile).map_err(|e| {
                Error::Busy(format!(
                    "ganesha.nfsd could not be told to reload (pid file {}): {e}",
                    pidfile.display()
                ))
            })?;
            Ok(())
        })
        .await
    }
}

impl Exporter for GaneshaExporter {
    fn driver(&self) -> Driver {
        Driver::Ganesha
    }

    fn client_path(&self, export: &Export) -> String {
        // Its NFSv4 clients answer NFS4ERR_NOENT for the real path.
        pseudo_path_of(&export.share)
    }

    fn probe(&self) -> BoxFut<'_, Result<()>> {
        Box::pin(async move {
            if find_program("ganesha.nfsd").is_none() {
                return Err(Error::Unsupported(
                    "ganesha.nfsd is not installed (package nfs-ganesha)".into(),
                ));
            }
            let pidfile = self.pidfile.clone();
            if !smol::unblock(move || pidfile_alive(&pidfile)).await {
                return Err(Error::Busy(format!(
                    "ganesha.nfsd is not running (no live pid in {})",
                    self.pidfile.display()
                )));
            }
            Ok(())
        })
    }

    fn load(&self, specs: &[ExportSpec]) {
        self.state.load(specs);
    }

    fn apply<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            self.state
                .upsert(spec, |set| self.write_and_reload(set))
                .await
        })
    }

    fn remove<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            self.state
                .forget(spec, |set| self.write_and_reload(set))
                .await
        })
    }

    fn refresh_size<'a>(&'a self, _spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn reconcile<'a>(
        &'a self,
        specs: &'a [ExportSpec],
        repair: bool,
    ) -> BoxFut<'a, Result<Vec<Finding>>> {
        Box::pin(async move {
            if repair {
                self.load(specs);
            }
            // Judged against the tree (the specs), not what this driver last wrote.
            let set = super::coalesce::set_of(specs);
            let want = exports_conf(&set);
            let file = self.file.clone();
            let have = smol::unblock(move || std::fs::read_to_string(file).ok()).await;
            let mut findings = Vec::new();
            if have.is_none() && specs.is_empty() {
                return Ok(findings);
            }
            if have.as_deref() != Some(want.as_str()) {
                findings.push(Finding::new(
                    Driver::Ganesha,
                    "drifted",
                    self.file.display().to_string(),
                    action(repair, "rewritten from the tree and ganesha reloaded"),
                ));
                if repair {
                    self.state
                        .flush_all(|set| self.write_and_reload(set))
                        .await?;
                }
            }
            Ok(findings)
        })
    }
}
