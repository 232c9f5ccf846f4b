//! Snapshot time against volume size and fragmentation, with extent counts.

use std::path::Path;

use shelf::client::get;

use crate::calls::{call, share_create, share_show, snapshot_create, volume};
use crate::env::{Res, Shelfd};
use crate::run::measure;
use crate::stats::{ms, Table};

/// Snapshot time against volume size and fragmentation (shelfd only), with extent counts.
pub fn snapshot_sizes(
    d: &Shelfd,
    pool_dir: &Path,
    source_size: u64,
    samples: usize,
) -> Res<String> {
    let mut c = d.client()?;
    let mut table = Table::new(&[
        "volume",
        "size",
        "written",
        "extents",
        "snapshot.create p50 ms",
        "p99 ms",
    ]);
    let scattered = 256u64;
    let cases: Vec<(String, u64, bool)> = vec![
        ("snapsrc".into(), source_size, false),
        ("frag-1g".into(), 1 << 30, true),
        ("frag-64g".into(), 64 << 30, true),
        ("frag-1t".into(), 1 << 40, true),
    ];
    for (name, size, scatter) in cases {
        let vol = if name == "snapsrc" {
            volume(pool_dir, &call(&mut c, share_show(&name))?)?
        } else {
            let s = call(&mut c, share_create(&name, size, None))?;
            volume(pool_dir, get(&s, "share").ok_or("no share")?)?
        };
        if scatter {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&vol)
                .map_err(|e| e.to_string())?;
            let block = vec![7u8; 4096];
            for i in 0..scattered {
                f.write_all_at(&block, i * (size / scattered))
                    .map_err(|e| e.to_string())?;
            }
            f.sync_all().map_err(|e| e.to_string())?;
        }
        let extents = extent_count(&vol)?;
        let per = samples.clamp(2, 40);
        let s = measure(
            1,
            per,
            |_| d.client(),
            |c, _, i| call(c, snapshot_create(&name, &format!("z-{i}"))).map(|_| ()),
        )?;
        table.row(vec![
            name.clone(),
            human(size),
            if scatter {
                format!("{scattered} × 4 KiB scattered")
            } else {
                "all".into()
            },
            extents.to_string(),
            ms(s.p50()),
            ms(s.p99()),
        ]);
    }
    Ok(table.render())
}

/// Number of extents of a file: the rows of `filefrag -v` (FIEMAP). Its summary line
/// counts physically contiguous extents as one, which is not what a reflink walks.
pub fn extent_count(path: &Path) -> Res<u64> {
    let out = crate::env::sh(&["filefrag", "-v", crate::env::path_str(path)])?;
    Ok(count_extent_rows(&out))
}

fn count_extent_rows(filefrag_v: &str) -> u64 {
    filefrag_v
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            t.split_once(':')
                .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        })
        .count() as u64
}

/// 1 GiB, 64 GiB, 1 TiB...
pub fn human(b: u64) -> String {
    match b {
        b if b >= 1 << 40 => format!("{} TiB", b >> 40),
        b if b >= 1 << 30 => format!("{} GiB", b >> 30),
        b => format!("{} MiB", b >> 20),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_filefrag_rows_not_its_summary() {
        let out = "Filesystem type is: 58465342\n\
File size of /m/f is 1073741824 (262144 blocks of 4096 bytes)\n \
ext:     logical_offset:        physical_offset: length:   expected: flags:\n   \
0:        0..       0:         10..        10:      1:\n   \
1:     1024..    1024:        299..       299:      1:       1034:\n   \
2:     2048..    2048:        300..       300:      1:             last,eof\n\
/m/f: 2 extents found\n";
        assert_eq!(super::count_extent_rows(out), 3);
    }
}
