//! NFS through the kernel server: shelfd owns one exports file (default
//! `/etc/exports.d/shelf.exports`), rewrites it atomically on every change and applies it
//! with `exportfs -r`, coalescing bursts. Because the file is the persistent truth, an
//! `exportfs -ra` by anyone keeps our exports, and they come back at boot with nfsd.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::coalesce::Coalescer;
use super::{action, write_atomically, BoxFut, ExportSpec, Exporter, Finding};
use crate::error::{Error, Result};
use crate::model::Driver;
use crate::sys::cmd::{find_program, Cmd, Runner};

/// The exports-file line of one export, or `None` when nobody may mount it yet.
pub fn exports_line(spec: &ExportSpec) -> Option<String> {
    let e = &spec.export;
    let clients = e.allowed_with_access();
    if clients.is_empty() {
        return None;
    }
    let mut line = quote_path(&spec.path);
    for (client, access) in clients {
        let mut opts = vec![access.as_str()];
        opts.push(if e.options.sync { "sync" } else { "async" });
        opts.push(if e.options.root_squash {
            "root_squash"
        } else {
            "no_root_squash"
        });
        opts.push("no_subtree_check");
        let fsid = e.fsid.map(|f| format!("fsid={f}"));
        let mut opts: Vec<String> = opts.into_iter().map(str::to_string).collect();
        opts.extend(fsid);
        line.push_str(&format!(" {client}({})", opts.join(",")));
    }
    Some(line)
}

/// Whether `exportfs -r` failed only because a file in /etc/exports.d that is not ours
/// vanished between its directory listing and its open ("can't open ... for reading"):
/// another program removed or replaced its file. Running it again is then correct.
pub fn vanished_other_file(stderr: &str, ours: &Path) -> bool {
    let mut lines = stderr.lines().filter(|l| !l.trim().is_empty()).peekable();
    lines.peek().is_some()
        && lines.all(|l| {
            l.split_once("can't open ")
                .and_then(|(_, rest)| rest.strip_suffix(" for reading"))
                .is_some_and(|file| Path::new(file) != ours)
        })
}

/// Quote a path for an exports file (paths with spaces are quoted; shelf's paths have none).
fn quote_path(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars().any(|c| c.is_whitespace()) {
        format!("\"{s}\"")
    } else {
        s
    }
}

/// The whole exports file for a set of exports.
pub fn exports_file(set: &BTreeMap<String, ExportSpec>) -> String {
    let mut out =
        String::from("# Written by shelfd. Do not edit: this file is rewritten on every change.\n");
    let mut lines: Vec<String> = set.values().filter_map(exports_line).collect();
    lines.sort();
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// Parse `exportfs -v` output into (path, client, options) triples. Long paths put the
/// client on the next line.
pub fn parse_exportfs_v(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut pending: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let starts_blank = line.starts_with(char::is_whitespace);
        let (path, rest) = if starts_blank {
            match &pending {
                Some(p) => (p.clone(), line.trim()),
                None => continue,
            }
        } else {
            let t = line.trim_end();
            match t.split_once(char::is_whitespace) {
                Some((p, r)) => (p.to_string(), r.trim()),
                None => {
                    pending = Some(t.to_string());
                    continue;
                }
            }
        };
        pending = Some(path.clone());
        let (client, opts) = match rest.split_once('(') {
            Some((c, o)) => (c.to_string(), o.trim_end_matches(')').to_string()),
            None => (rest.to_string(), String::new()),
        };
        out.push((path, client, opts));
    }
    out
}

/// The kernel NFS driver.
#[derive(Debug)]
pub struct NfsKernelExporter {
    runner: Runner,
    file: PathBuf,
    /// Directories under which exported paths are shelf's (the pools' share directories).
    owned_roots: Vec<PathBuf>,
    state: Coalescer,
}

impl NfsKernelExporter {
    /// A driver owning `file`; paths under `owned_roots` are shelf's.
    pub fn new(runner: Runner, file: PathBuf, owned_roots: Vec<PathBuf>) -> Self {
        NfsKernelExporter {
            runner,
            file,
            owned_roots,
            state: Coalescer::default(),
        }
    }

    async fn write_and_apply(&self, set: BTreeMap<String, ExportSpec>) -> Result<()> {
        let text = exports_file(&set);
        let count = set.len();
        let file = self.file.clone();
        smol::unblock(move || write_atomically(&file, &text, 0o644))
            .await
            .map_err(|e| Error::io(format!("writing {}", self.file.display()), e))?;
        let mut attempt = 1;
        while let Err(e) = self.runner.run(&Cmd::new("exportfs").arg("-r")).await {
            if attempt == 3 || !vanished_other_file(e.stderr(), &self.file) {
                return Err(e.into());
            }
            log::info!("exportfs -r failed on another program's file; running it again: {e}");
            attempt += 1;
        }
        log::debug!(
            "nfs kernel: wrote {} export(s) to {} and ran exportfs -r",
            count,
            self.file.display()
        );
        Ok(())
    }

    async fn live(&self) -> Result<Vec<(String, String, String)>> {
        let out = self.runner.run(&Cmd::new("exportfs").arg("-v")).await?;
        Ok(parse_exportfs_v(&out.stdout_text()))
    }

    fn owned(&self, path: &str) -> bool {
        self.owned_roots
            .iter()
            .any(|r| Path::new(path).starts_with(r))
    }
}

impl Exporter for NfsKernelExporter {
    fn driver(&self) -> Driver {
        Driver::Kernel
    }

    fn probe(&self) -> BoxFut<'_, Result<()>> {
        Box::pin(async move {
            if find_program("exportfs").is_none() {
                return Err(Error::Unsupported(
                    "exportfs is not installed (package nfs-kernel-server)".into(),
                ));
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
                .upsert(spec, |set| self.write_and_apply(set))
                .await
        })
    }

    fn remove<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            self.state
                .forget(spec, |set| self.write_and_apply(set))
                .await
        })
    }

    fn refresh_size<'a>(&'a self, _spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        // NFS clients see the file's size directly.
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
            let wanted: BTreeSet<(String, String)> = specs
                .iter()
                .flat_map(|s| {
                    let p = s.path.display().to_string();
                    s.export.allowed().into_iter().map(move |c| (p.clone(), c))
                })
                .collect();
            let file = self.file.clone();
            let on_disk = smol::unblock(move || std::fs::read_to_string(file).ok()).await;
            let mut findings = Vec::new();
            if on_disk.is_none() && specs.is_empty() {
                // Nothing exported and no file of ours: nothing to repair, nothing to create.
                return Ok(findings);
            }
            // Judged against the tree (the specs), not what this driver last wrote.
            let set = super::coalesce::set_of(specs);
            let file_drifted = on_disk.as_deref() != Some(exports_file(&set).as_str());
            if file_drifted {
                findings.push(Finding::new(
                    Driver::Kernel,
                    "drifted",
                    self.file.display().to_string(),
                    action(repair, "rewritten from the tree"),
                ));
            }
            let live: BTreeSet<(String, String)> = self
                .live()
                .await?
                .into_iter()
                .map(|(p, c, _)| (p, c))
                .collect();
            let missing: Vec<&(String, String)> = wanted.difference(&live).collect();
            for (p, c) in &missing {
                findings.push(Finding::new(
                    Driver::Kernel,
                    "missing",
                    format!("{p} {c}"),
                    action(repair, "re-exported"),
                ));
            }
            let live = if !repair {
                live
            } else if file_drifted || !missing.is_empty() {
                self.state
                    .flush_all(|set| self.write_and_apply(set))
                    .await?;
                self.live()
                    .await?
                    .into_iter()
                    .map(|(p, c, _)| (p, c))
                    .collect()
            } else {
                live
            };
            for (p, c) in live.difference(&wanted) {
                if self.owned(p) {
                    findings.push(Finding::new(
                        Driver::Kernel,
                        "orphan",
                        format!("{p} {c}"),
                        "exported by another exports file or by hand; left alone",
                    ));
                }
            }
            if repair {
                for (p, c) in wanted.difference(&live) {
                    findings.push(Finding::new(
                        Driver::Kernel,
                        "missing",
                        format!("{p} {c}"),
                        "still missing after exportfs -r",
                    ));
                }
            }
            Ok(findings)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_vanished_foreign_file_is_worth_a_second_run() {
        let ours = Path::new("/etc/exports.d/shelf.exports");
        let gone = "exportfs: can't open /etc/exports.d/other-123.exports for reading\n";
        assert!(vanished_other_file(gone, ours));
        assert!(!vanished_other_file(
            "exportfs: can't open /etc/exports.d/shelf.exports for reading\n",
            ours
        ));
        assert!(!vanished_other_file(
            &format!("{gone}exportfs: /srv/x: No such file or directory\n"),
            ours
        ));
        assert!(!vanished_other_file("", ours));
    }
    use crate::model::{Access, Attached, Export, ExportOptions, Protocol, ShareState};

    fn spec(clients: &[&str], attached: &[(&str, Access)]) -> ExportSpec {
        ExportSpec {
            export: Export {
                id: "e1".into(),
                share: "s1".into(),
                share_name: "vol".into(),
                protocol: Protocol::Nfs,
                driver: Driver::Kernel,
                state: ShareState::Available,
                options: ExportOptions {
                    clients: clients.iter().map(|c| c.to_string()).collect(),
                    ..Default::default()
                },
                target: "/p/shares/s1".into(),
                tid: None,
                fsid: Some(1001),
                chap_user: None,
                attached: attached
                    .iter()
                    .map(|(c, m)| Attached {
                        client: c.to_string(),
                        mode: *m,
                    })
                    .collect(),
                created_at: 0,
            },
            path: "/p/shares/s1".into(),
            chap_secret: None,
            thin: true,
            backing: Default::default(),
        }
    }

    #[test]
    fn lines_carry_safe_defaults_and_stable_fsid() {
        let l = exports_line(&spec(&["10.0.0.0/8"], &[("192.0.2.5", Access::Ro)])).unwrap();
        assert_eq!(
            l,
            "/p/shares/s1 10.0.0.0/8(rw,sync,root_squash,no_subtree_check,fsid=1001) \
             192.0.2.5(ro,sync,root_squash,no_subtree_check,fsid=1001)"
        );
        assert_eq!(
            exports_line(&spec(&[], &[])),
            None,
            "nobody allowed: no line"
        );
    }

    #[test]
    fn parses_exportfs_v_including_wrapped_lines() {
        let text = "/tmp/ex/a     \t127.0.0.1(sync,wdelay,hide,no_subtree_check,fsid=1001,sec=sys,rw,root_squash,no_all_squash)\n\
/var/tmp/a-very-long-path-that-wraps-onto-the-next-line/shares/0123\n\t\t10.0.0.0/8(sync,ro)\n";
        let v = parse_exportfs_v(text);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].0, "/tmp/ex/a");
        assert_eq!(v[0].1, "127.0.0.1");
        assert!(v[0].2.contains("fsid=1001"));
        assert_eq!(
            v[1].0,
            "/var/tmp/a-very-long-path-that-wraps-onto-the-next-line/shares/0123"
        );
        assert_eq!(v[1].1, "10.0.0.0/8");
    }
}
