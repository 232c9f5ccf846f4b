//! Per-operation latency and throughput, shelfd against the floor, at each concurrency.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shelf::client::{get, Client};

use shelf::model::{Connector, Protocol};
use shelf::proto::{AttachArgs, CloneArgs, Request, ShareDeleteArgs, ShareResizeArgs};

use crate::calls::{
    array_len, call, export_create, export_nfs, fill, read_reply, share_create, share_list,
    share_show, snapshot_create, volume,
};
use crate::env::{Res, Shelfd};
use crate::floor::{Floor, FloorConn};
use crate::run::measure;
use crate::stats::{ms, ratio, Samples, Table};

/// Size of the shares the per-operation runs make.
pub const SIZE: u64 = 64 << 20;
/// Alternating rounds of shelfd and floor batches: many short batches, so that the
/// machine's load, which drifts over seconds, falls on both sides alike.
const ROUNDS: usize = 10;

/// The operations measured, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// share.create
    Create,
    /// share.create + export.create iscsi
    CreateIscsi,
    /// The same, against the floor's raw IPC to tgtd (no tgtadm)
    CreateIscsiIpc,
    /// share.create + export.create nfs
    CreateNfs,
    /// snapshot.create of a volume with its size written
    Snapshot,
    /// share.clone
    Clone,
    /// share.attach + share.detach
    AttachDetach,
    /// The same, against the floor's raw IPC to tgtd (no tgtadm)
    AttachDetachIpc,
    /// share.resize
    Resize,
    /// share.show
    Show,
    /// share.list of a pool of 100
    List,
    /// share.delete
    Delete,
}

impl Op {
    /// Every operation, in run order (delete last: it removes what create made).
    pub const ALL: [Op; 12] = [
        Op::Create,
        Op::CreateIscsi,
        Op::CreateIscsiIpc,
        Op::CreateNfs,
        Op::Snapshot,
        Op::Clone,
        Op::AttachDetach,
        Op::AttachDetachIpc,
        Op::Resize,
        Op::Show,
        Op::List,
        Op::Delete,
    ];

    /// The name in the tables.
    pub fn label(self, list_size: usize) -> String {
        match self {
            Op::Create => "share.create".into(),
            Op::CreateIscsi => "share.create + iSCSI export".into(),
            Op::CreateIscsiIpc => "share.create + iSCSI export (floor: tgtd socket)".into(),
            Op::CreateNfs => "share.create + NFS export".into(),
            Op::Snapshot => "snapshot.create (volume fully written)".into(),
            Op::Clone => "share.clone".into(),
            Op::AttachDetach => "share.attach + detach".into(),
            Op::AttachDetachIpc => "share.attach + detach (floor: tgtd socket)".into(),
            Op::Resize => "share.resize".into(),
            Op::Show => "share.show".into(),
            Op::List => format!("share.list ({list_size} shares)"),
            Op::Delete => "share.delete".into(),
        }
    }

    /// Costly operations get fewer samples.
    fn heavy(self) -> bool {
        matches!(
            self,
            Op::CreateIscsi
                | Op::CreateIscsiIpc
                | Op::CreateNfs
                | Op::AttachDetach
                | Op::AttachDetachIpc
        )
    }

    /// The name `--ops` takes.
    pub fn key(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::CreateIscsi => "create-iscsi",
            Op::CreateIscsiIpc => "create-iscsi-ipc",
            Op::CreateNfs => "create-nfs",
            Op::Snapshot => "snapshot",
            Op::Clone => "clone",
            Op::AttachDetach => "attach",
            Op::AttachDetachIpc => "attach-ipc",
            Op::Resize => "resize",
            Op::Show => "show",
            Op::List => "list",
            Op::Delete => "delete",
        }
    }

    /// The operations named in `keys` (every one when empty), in run order. `delete`
    /// removes what `create` made, so it needs `create`.
    pub fn chosen(keys: &[String]) -> Res<Vec<Op>> {
        if let Some(k) = keys.iter().find(|k| !Op::ALL.iter().any(|o| o.key() == *k)) {
            let known: Vec<_> = Op::ALL.iter().map(|o| o.key()).collect();
            return Err(format!(
                "--ops: no operation {k:?} (known: {})",
                known.join(", ")
            ));
        }
        let ops: Vec<Op> = Op::ALL
            .into_iter()
            .filter(|o| keys.is_empty() || keys.iter().any(|k| k == o.key()))
            .collect();
        if ops.contains(&Op::Delete) && !ops.contains(&Op::Create) {
            return Err("--ops: delete removes the shares create made; name create too".into());
        }
        Ok(ops)
    }

    fn tag(self) -> &'static str {
        match self {
            Op::Create | Op::Delete => "b",
            Op::CreateIscsi => "i",
            Op::CreateIscsiIpc => "j",
            Op::CreateNfs => "n",
            Op::Snapshot => "s",
            Op::Clone => "k",
            _ => "x",
        }
    }
}

/// What the per-operation runs need: the two sides and the objects prepared for them.
#[derive(Debug)]
pub struct Micro<'a> {
    /// shelfd.
    pub d: &'a Shelfd,
    /// The floor.
    pub floor: &'a Floor,
    /// Shares in the `list100` pool.
    pub list_size: usize,
    /// The floor's target ids for attach/detach, by thread.
    attach_tids: Vec<u32>,
    /// The current size of each thread's resize share (shelfd, floor).
    sizes: Vec<(AtomicU64, AtomicU64)>,
}

impl<'a> Micro<'a> {
    /// Prepare the objects every run uses, on both sides (not timed).
    pub fn prepare(
        d: &'a Shelfd,
        floor: &'a Floor,
        pool_dir: PathBuf,
        source_size: u64,
        list_size: usize,
        max_threads: usize,
    ) -> Res<Micro<'a>> {
        let mut c = d.client()?;
        let src = call(&mut c, share_create("snapsrc", source_size, None))?;
        fill(
            &volume(&pool_dir, get(&src, "share").ok_or("no share")?)?,
            source_size,
        )?;
        call(&mut c, snapshot_create("snapsrc", "seed"))?;
        floor.create_share("default", "snapsrc", source_size)?;
        fill(&floor.volume("snapsrc")?, source_size)?;
        floor.snapshot(&floor.volume("snapsrc")?, "seed")?;
        let mut attach_tids = Vec::new();
        let mut sizes = Vec::new();
        for th in 0..max_threads {
            let (rs, att) = (format!("rs-{th}"), format!("att-{th}"));
            call(&mut c, share_create(&rs, SIZE, None))?;
            floor.create_share("default", &rs, SIZE)?;
            call(&mut c, share_create(&att, SIZE, None))?;
            call(&mut c, export_create(&att, Protocol::Iscsi, &[]))?;
            attach_tids.push(floor.create_iscsi(&att, SIZE)?);
            sizes.push((AtomicU64::new(SIZE), AtomicU64::new(SIZE)));
        }
        for i in 0..list_size {
            let name = format!("l-{i}");
            call(&mut c, share_create(&name, SIZE, Some("list100")))?;
            floor.create_share("list100", &name, SIZE)?;
        }
        Ok(Micro {
            d,
            floor,
            list_size,
            attach_tids,
            sizes,
        })
    }

    fn shelfd_op(&self, op: Op, c: &mut Client, name: &str, th: usize) -> Res<()> {
        let create = |c: &mut Client| call(c, share_create(name, SIZE, None)).map(|_| ());
        match op {
            Op::Create => create(c),
            Op::CreateIscsi | Op::CreateIscsiIpc => {
                create(c)?;
                call(c, export_create(name, Protocol::Iscsi, &[])).map(|_| ())
            }
            Op::CreateNfs => {
                create(c)?;
                export_nfs(c, name)
            }
            Op::Snapshot => call(c, snapshot_create("snapsrc", name)).map(|_| ()),
            Op::Clone => {
                let a = CloneArgs {
                    snapshot: "seed".into(),
                    name: name.into(),
                    share: Some("snapsrc".into()),
                    ..Default::default()
                };
                call(c, Request::ShareClone(a)).map(|_| ())
            }
            Op::AttachDetach | Op::AttachDetachIpc => {
                let share = format!("att-{th}");
                let a = AttachArgs {
                    share,
                    connector: Connector {
                        host: format!("host-{th}"),
                        ip: None,
                        initiator: Some(format!("iqn.2026-11.org.example:bench-{th}")),
                        nqn: None,
                    },
                    ..Default::default()
                };
                call(c, Request::ShareAttach(a.clone()))?;
                call(c, Request::ShareDetach(a)).map(|_| ())
            }
            Op::Resize => {
                let size = self.sizes[th].0.fetch_add(1 << 20, Ordering::SeqCst) + (1 << 20);
                let a = ShareResizeArgs {
                    share: format!("rs-{th}"),
                    size,
                    pool: None,
                };
                call(c, Request::ShareResize(a)).map(|_| ())
            }
            Op::Show => read_reply(c, &share_show(&format!("rs-{th}"))).map(|_| ()),
            Op::List => {
                let ok = read_reply(c, &share_list(Some("list100")))?;
                match array_len(&ok).ok() {
                    Some(k) if k == self.list_size => Ok(()),
                    other => Err(format!(
                        "share.list gave {other:?} shares, not {}",
                        self.list_size
                    )),
                }
            }
            Op::Delete => {
                let a = ShareDeleteArgs {
                    share: name.into(),
                    ..Default::default()
                };
                call(c, Request::ShareDelete(a)).map(|_| ())
            }
        }
    }

    fn floor_op(&self, op: Op, c: &mut FloorConn, name: &str, th: usize) -> Res<()> {
        let f = self.floor;
        match op {
            Op::Create => f.create_share("default", name, SIZE).map(|_| ()),
            Op::CreateIscsi => f.create_iscsi(name, SIZE).map(|_| ()),
            Op::CreateIscsiIpc => f.create_iscsi_ipc(name, SIZE).map(|_| ()),
            Op::CreateNfs => f.create_nfs(name, SIZE),
            Op::Snapshot => f.snapshot(&f.volume("snapsrc")?, name),
            Op::Clone => f.clone_share(&f.snapshot_file("seed")?, name),
            Op::AttachDetach => f.attach_detach(
                &format!("att-{th}"),
                self.attach_tids[th],
                &format!("iqn.2026-11.org.example:bench-{th}"),
            ),
            Op::AttachDetachIpc => f.attach_detach_ipc(
                &format!("att-{th}"),
                self.attach_tids[th],
                &format!("iqn.2026-11.org.example:bench-{th}"),
            ),
            Op::Resize => {
                let size = self.sizes[th].1.fetch_add(1 << 20, Ordering::SeqCst) + (1 << 20);
                f.resize(&format!("rs-{th}"), size)
            }
            Op::Show => c.show(&format!("rs-{th}")).map(|_| ()),
            Op::List => c.list("list100").map(|_| ()),
            Op::Delete => f.delete_share(name),
        }
    }

    /// Run one operation at one concurrency on both sides, alternating rounds.
    pub fn run(&self, op: Op, threads: usize, samples: usize) -> Res<(Samples, Samples)> {
        let total = if op.heavy() { samples * 3 / 5 } else { samples }.max(2 * ROUNDS);
        let per = (total / (threads * ROUNDS)).max(1);
        let (mut sd, mut fl) = (Samples::default(), Samples::default());
        for r in 0..ROUNDS {
            let name = |th: usize, i: usize| format!("{}{threads}-{r}-{th}-{i}", op.tag());
            sd.merge(measure(
                threads,
                per,
                |_| self.d.client(),
                |c, th, i| self.shelfd_op(op, c, &name(th, i), th),
            )?);
            fl.merge(measure(
                threads,
                per,
                |_| self.floor.connect(),
                |c, th, i| self.floor_op(op, c, &name(th, i), th),
            )?);
        }
        Ok((sd, fl))
    }
}

/// Run the operations at each concurrency; returns the report section.
pub fn run_all(m: &Micro, ops: &[Op], concurrency: &[usize], samples: usize) -> Res<String> {
    let mut out = String::new();
    for &c in concurrency {
        let mut table = Table::new(&[
            "operation",
            "shelfd p50 ms",
            "p99 ms",
            "ops/s",
            "floor p50 ms",
            "p99 ms",
            "ops/s",
            "shelfd/floor p50",
        ]);
        for &op in ops {
            eprintln!("  {} at concurrency {c}", op.label(m.list_size));
            let (sd, fl) = m.run(op, c, samples)?;
            table.row(vec![
                op.label(m.list_size),
                ms(sd.p50()),
                ms(sd.p99()),
                format!("{:.0}", sd.throughput()),
                ms(fl.p50()),
                ms(fl.p99()),
                format!("{:.0}", fl.throughput()),
                format!("**{}**", ratio(sd.p50(), fl.p50())),
            ]);
        }
        out.push_str(&format!(
            "\n### Concurrency {c} ({c} client connection(s), each one request at a time)\n\n{}",
            table.render()
        ));
    }
    Ok(out)
}

/// A short pause between phases, so one phase's background work (XFS frees, WAL
/// checkpoints) does not land in the next one's figures.
pub fn settle() {
    std::thread::sleep(Duration::from_millis(500));
}
