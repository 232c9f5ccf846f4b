//! Scale runs: thousands of shares and snapshots, thousands of targets and exports,
//! restarts, memory.

use std::time::{Duration, Instant};

use ciborium::Value;
use shelf::client::Client;

use shelf::model::Protocol;
use shelf::proto::{Request, SnapshotListArgs, TreeArgs};

use crate::calls::{
    call, export_create, export_nfs, retry_foreign_exportfs, share_create, share_list, share_show,
    snapshot_create,
};
use crate::env::{memory, sh, Res, Shelfd};
use crate::floor::Floor;
use crate::run::measure;
use crate::stats::{mib, ms, ratio, secs, Samples, Table};

/// The IQN prefix shelfd is configured with.
pub const SHELF_IQN: &str = "iqn.2026-11.org.example.shelf";

/// Sizes of the scale runs.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    /// Shares (and as many snapshots).
    pub objects: usize,
    /// iSCSI targets.
    pub targets: usize,
    /// NFS exports.
    pub nfs: usize,
    /// Samples per read-only measurement.
    pub samples: usize,
}

/// Make `count` shares named `<prefix><i>` (1 MiB, sparse) on 16 connections; returns the wall time.
fn make_shares(d: &Shelfd, prefix: &str, count: usize, pool: &str) -> Res<Duration> {
    let threads = 16.min(count.max(1));
    let per = count.div_ceil(threads);
    let s = measure(
        threads,
        per,
        |_| d.client(),
        |c, th, i| {
            let k = th * per + i;
            if k >= count {
                return Ok(());
            }
            call(
                c,
                share_create(&format!("{prefix}{k}"), 1 << 20, Some(pool)),
            )
            .map(|_| ())
        },
    )?;
    Ok(s.wall)
}

/// The objects the probes read when the scale run is made on its own (`--only
/// objects`): the share `rs-0` and `list_size` shares in the pool `list100`, which the
/// per-operation runs otherwise make.
pub fn probe_objects(d: &Shelfd, list_size: usize) -> Res<()> {
    let mut c = d.client()?;
    call(&mut c, share_create("rs-0", 1 << 20, None))?;
    make_shares(d, "l-", list_size, "list100").map(|_| ())
}

/// One read-only or small measurement at c1.
fn sample(
    d: &Shelfd,
    count: usize,
    f: impl Fn(&mut Client, usize) -> Res<()> + Sync,
) -> Res<Samples> {
    measure(1, count.max(1), |_| d.client(), |c, _, i| f(c, i))
}

/// The probes run before and after growing the tree: show, list (100 and all), tree,
/// create, snapshot.
fn probes(d: &Shelfd, round: &str, k: usize) -> Res<Vec<(String, Samples)>> {
    let few = (k / 10).max(2);
    Ok(vec![
        (
            "share.show".into(),
            sample(d, k, |c, _| call(c, share_show("rs-0")).map(|_| ()))?,
        ),
        (
            "share.list (pool of 100)".into(),
            sample(d, k, |c, _| {
                call(c, share_list(Some("list100"))).map(|_| ())
            })?,
        ),
        (
            "share.list (every share)".into(),
            sample(d, few, |c, _| call(c, share_list(None)).map(|_| ()))?,
        ),
        (
            "snapshot.list (every snapshot)".into(),
            sample(d, few, |c, _| call(c, snapshot_list()).map(|_| ()))?,
        ),
        (
            "tree".into(),
            sample(d, few, |c, _| {
                call(c, Request::Tree(TreeArgs::default())).map(|_| ())
            })?,
        ),
        (
            "share.create".into(),
            sample(d, k / 2, |c, i| {
                let name = format!("probe-{round}-{i}");
                call(c, share_create(&name, 1 << 20, None)).map(|_| ())
            })?,
        ),
        (
            "snapshot.create (empty volume)".into(),
            sample(d, k / 2, |c, i| {
                call(c, snapshot_create(&format!("probe-{round}-{i}"), "p")).map(|_| ())
            })?,
        ),
    ])
}

/// `snapshot.list` of every snapshot.
fn snapshot_list() -> Request {
    Request::SnapshotList(SnapshotListArgs::default())
}

/// How many shares and snapshots shelfd lists.
pub fn count_objects(d: &Shelfd) -> Res<(usize, usize)> {
    let mut c = d.client()?;
    let len = |v: Value| v.as_array().map(Vec::len).unwrap_or(0);
    Ok((
        len(call(&mut c, share_list(None))?),
        len(call(&mut c, snapshot_list())?),
    ))
}

/// 10,000 shares with 10,000 snapshots: read and create costs before and after, memory.
pub fn objects(d: &Shelfd, k: Counts) -> Res<String> {
    let pid = d.pid().ok_or("shelfd is not running")?;
    let (s0, n0) = count_objects(d)?;
    let before = probes(d, "a", k.samples)?;
    let (rss_before, _) = memory(pid)?;
    eprintln!(
        "  creating {} shares and {} snapshots",
        k.objects, k.objects
    );
    let wall_shares = make_shares(d, "o-", k.objects, "default")?;
    let threads = 16.min(k.objects.max(1));
    let per = k.objects.div_ceil(threads);
    let wall_snaps = measure(
        threads,
        per,
        |_| d.client(),
        |c, th, i| {
            let j = th * per + i;
            if j >= k.objects {
                return Ok(());
            }
            call(c, snapshot_create(&format!("o-{j}"), "s")).map(|_| ())
        },
    )?
    .wall;
    let (rss_full, _) = memory(pid)?;
    // Let the filesystem and the WAL catch up with 20,000 creations before measuring.
    std::thread::sleep(Duration::from_secs(3));
    let (s1, n1) = count_objects(d)?;
    let after = probes(d, "b", k.samples)?;
    let (rss_after, hwm) = memory(pid)?;
    let mut out = format!(
        "Made {} shares in {} s ({:.0}/s) and {} snapshots in {} s ({:.0}/s), 16 connections.\n\n",
        k.objects,
        secs(wall_shares),
        k.objects as f64 / wall_shares.as_secs_f64(),
        k.objects,
        secs(wall_snaps),
        k.objects as f64 / wall_snaps.as_secs_f64()
    );
    let mut table = Table::new(&[
        "operation (c1)",
        &format!("p50 ms at {s0} shares/{n0} snapshots"),
        &format!("p50 ms at {s1}/{n1}"),
        "p99 ms at the end",
        "after/before",
    ]);
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        table.row(vec![
            name.clone(),
            ms(a.p50()),
            ms(b.p50()),
            ms(b.p99()),
            ratio(b.p50(), a.p50()),
        ]);
    }
    out.push_str(&table.render());
    out.push_str(&format!(
        "\nshelfd resident memory: {} MiB before, {} MiB with {s1} shares and {n1} snapshots, \
         {} MiB after the lists and trees above (peak {} MiB).\n",
        mib(rss_before),
        mib(rss_full),
        mib(rss_after),
        mib(hwm)
    ));
    Ok(out)
}

/// 2,000 iSCSI targets through shelfd and through bare tgtadm.
pub fn targets(d: &Shelfd, floor: &Floor, k: Counts) -> Res<String> {
    eprintln!("  {} iSCSI targets", k.targets);
    make_shares(d, "t-", k.targets, "default")?;
    let sd = sample(d, k.targets, |c, i| {
        call(c, export_create(&format!("t-{i}"), Protocol::Iscsi, &[])).map(|_| ())
    })?;
    for i in 0..k.targets {
        floor.create_share("default", &format!("t-{i}"), 1 << 20)?;
    }
    let t0 = Instant::now();
    let mut fl = Samples::default();
    for i in 0..k.targets {
        let s = Instant::now();
        floor.export_iscsi(&format!("t-{i}"))?;
        fl.lat.push(s.elapsed());
    }
    fl.wall = t0.elapsed();
    Ok(growth_table(
        "export.create iscsi (target + LUN + CHAP)",
        &sd,
        &fl,
        k.targets,
    ))
}

fn growth_table(what: &str, sd: &Samples, fl: &Samples, count: usize) -> String {
    let w = (count / 20).clamp(1, 100);
    let mut table = Table::new(&[
        "",
        &format!("p50 ms, first {w}"),
        &format!("p50 ms, last {w}"),
        "last/first",
        "total s",
    ]);
    for (side, s) in [
        (format!("shelfd {what}"), sd),
        ("floor (same commits and tgtadm commands)".into(), fl),
    ] {
        let (a, b) = (s.p50_of(0..w), s.p50_of(count - w..count));
        table.row(vec![side, ms(a), ms(b), ratio(b, a), secs(s.wall)]);
    }
    table.render()
}

/// A burst of NFS export creations, and the cost of one exportfs per change.
pub fn nfs(d: &Shelfd, k: Counts) -> Res<String> {
    eprintln!("  {} NFS exports", k.nfs);
    let serial = (k.samples / 5).max(2);
    make_shares(d, "n-", k.nfs, "default")?;
    make_shares(d, "n0-", serial, "default")?;
    make_shares(d, "n1-", serial, "default")?;
    let export = |c: &mut Client, name: String| export_nfs(c, &name);
    let exportfs = |count: usize| -> Res<Samples> {
        let mut s = Samples::default();
        for _ in 0..count {
            let t0 = Instant::now();
            retry_foreign_exportfs(|| sh(&["exportfs", "-r"]))?;
            s.lat.push(t0.elapsed());
        }
        Ok(s)
    };
    let floor_at_start = exportfs(5)?;
    let c1_start = sample(d, serial, |c, i| export(c, format!("n0-{i}")))?;
    let threads = 16.min(k.nfs.max(1));
    let per = k.nfs.div_ceil(threads);
    let burst = pipelined_burst(d, threads, per, k.nfs)?;
    let c1_end = sample(d, serial, |c, i| export(c, format!("n1-{i}")))?;
    let floor_at_end = exportfs(5)?;
    let naive = (floor_at_start.p50() + floor_at_end.p50()) / 2 * k.nfs as u32;
    let mut table = Table::new(&["", "value"]);
    table.row(vec![
        format!(
            "burst of {} export.create nfs, pipelined on {threads} connections: total",
            k.nfs
        ),
        format!(
            "**{} s** ({:.0}/s)",
            secs(burst.wall),
            k.nfs as f64 / burst.wall.as_secs_f64()
        ),
    ]);
    table.row(vec![
        "burst: p50 / p99 from sending a request to its reply".into(),
        format!("{} / {} ms", ms(burst.p50()), ms(burst.p99())),
    ]);
    table.row(vec![
        "one exportfs -r per change (the O(N²) way): estimated total".into(),
        format!("{} s", secs(naive)),
    ]);
    table.row(vec![
        "exportfs -r p50 at the start / at the end of the burst".into(),
        format!(
            "{} / {} ms",
            ms(floor_at_start.p50()),
            ms(floor_at_end.p50())
        ),
    ]);
    table.row(vec![
        "export.create nfs alone (c1) p50, at the start / after the burst".into(),
        format!(
            "{} / {} ms (×{})",
            ms(c1_start.p50()),
            ms(c1_end.p50()),
            ratio(c1_end.p50(), c1_start.p50())
        ),
    ]);
    Ok(table.render())
}

/// The NFS burst: `threads` connections, each sending its `per` requests at once
/// (pipelining; shelfd reads up to `max_in_flight` of them at a time) and then collecting
/// the replies. Latency is from a request's send to its reply.
fn pipelined_burst(d: &Shelfd, threads: usize, per: usize, count: usize) -> Res<Samples> {
    let t0 = Instant::now();
    let lat: Vec<Res<Vec<Duration>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|th| {
                s.spawn(move || {
                    let names: Vec<String> = (th * per..((th + 1) * per).min(count))
                        .map(|j| format!("n-{j}"))
                        .collect();
                    let mut c = d.client()?;
                    pipeline_exports(&mut c, &names)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a burst thread panicked".into()))
            })
            .collect()
    });
    let mut out = Samples::default();
    for l in lat {
        out.lat.extend(l?);
    }
    out.wall = t0.elapsed();
    Ok(out)
}

fn pipeline_exports(c: &mut Client, names: &[String]) -> Res<Vec<Duration>> {
    let mut sent = std::collections::HashMap::new();
    for name in names {
        let r = export_create(name, Protocol::Nfs, &["127.0.0.1"]);
        let id = c.send_request(&r, None).map_err(|e| e.to_string())?;
        sent.insert(id, (name.clone(), Instant::now()));
    }
    let mut lat = Vec::new();
    let mut again = Vec::new();
    while !sent.is_empty() {
        match c.recv().map_err(|e| e.to_string())? {
            Some((Some(id), result)) => {
                let (name, at) = sent.remove(&id).ok_or("a reply to an unknown id")?;
                match result {
                    Ok(_) => lat.push(at.elapsed()),
                    Err(e) if e.message.contains("can't open") => again.push((name, at)),
                    Err(e) => return Err(format!("export.create {name}: {e}")),
                }
            }
            Some((None, Err(e))) => return Err(format!("connection error: {e}")),
            _ => return Err("shelfd closed the connection during the burst".into()),
        }
    }
    for (name, at) in again {
        crate::calls::EXPORTFS_RETRIES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        export_nfs(c, &name)?;
        lat.push(at.elapsed());
    }
    Ok(lat)
}
