//! Restarts: shelfd with everything the scale runs made, and tgtd with every target
//! (replayed by `reconcile`, against the floor replaying its own with bare tgtadm).

use std::time::Instant;

use ciborium::Value;

use shelf::proto::Request;

use crate::calls::call;
use crate::env::{memory, Res, Shelfd, Tgtd};
use crate::floor::{Floor, FLOOR_IQN};
use crate::scale::{count_objects, SHELF_IQN};
use crate::stats::{mib, ratio, secs, Table};

/// Restart shelfd, and tgtd with every target, against the bare replay.
pub fn restarts(d: &Shelfd, tgtd: &Tgtd, floor: &Floor) -> Res<String> {
    eprintln!("  restarts");
    let mut table = Table::new(&["restart", "time s", "floor s", "ratio", "detail"]);
    let want = count_iscsi(d)?;
    let ready = d.restart()?;
    let (shares, snaps) = count_objects(d)?;
    table.row(vec![
        "shelfd (SIGTERM, start, until hello answers; start-up reconcile included)".into(),
        secs(ready),
        "-".into(),
        "-".into(),
        format!("{shares} shares, {snaps} snapshots, {want} iSCSI targets"),
    ]);
    tgtd.respawn()?;
    let t0 = Instant::now();
    let mut c = d.client()?;
    let r = call(&mut c, Request::Reconcile)?;
    let took = t0.elapsed();
    let back = tgtd.count_targets(SHELF_IQN)?;
    if back != want {
        return Err(format!(
            "after reconcile tgtd has {back} of shelf's {want} targets"
        ));
    }
    let findings = shelf::client::get(&r, "findings")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    let targets = floor.targets();
    floor.tgtd.respawn()?;
    let t1 = Instant::now();
    for (tid, name, id) in &targets {
        floor.new_target(*tid, name, id)?;
    }
    let bare = t1.elapsed();
    let floor_back = floor.tgtd.count_targets(FLOOR_IQN)?;
    table.row(vec![
        "tgtd killed and started empty; `reconcile` until every target is back".into(),
        secs(took),
        secs(bare),
        format!("**{}**", ratio(took, bare)),
        format!(
            "{back}/{want} targets back ({findings} findings); floor replayed {floor_back} targets with tgtadm"
        ),
    ]);
    let (rss, hwm) = memory(d.pid().ok_or("shelfd is not running")?)?;
    Ok(format!(
        "{}\nshelfd resident memory after the restart and reconcile: {} MiB (peak {} MiB).\n",
        table.render(),
        mib(rss),
        mib(hwm)
    ))
}

fn count_iscsi(d: &Shelfd) -> Res<usize> {
    let mut c = d.client()?;
    let v = call(&mut c, Request::ExportList(Default::default()))?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .filter(|e| shelf::client::get_text(e, "protocol") == Some("iscsi"))
                .count()
        })
        .unwrap_or(0))
}
