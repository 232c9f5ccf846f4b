//! The LVM commands the pool runs, as argv builders, and the parser of `lvs` JSON reports.
//!
//! Everything here is pure: it builds [`Cmd`] values and reads text, so it is tested in-file
//! against `lvs` output recorded in the VM tier (`tests/fixtures/lvm/`).

use serde::Deserialize;

use crate::sys::cmd::Cmd;

/// The columns every listing asks for (one `lvs` call answers scan, usage and existence).
pub const COLUMNS: &str =
    "lv_name,lv_attr,lv_size,lv_tags,pool_lv,origin,data_percent,metadata_percent,lv_metadata_size,vg_extent_size,thin_id,chunk_size";

/// One row of an `lvs` report.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Lv {
    /// The LV's name.
    pub name: String,
    /// The attribute string (`Vwi-a-tz--`): type in the first column, state in the fifth.
    pub attr: String,
    /// Size in bytes (for a thin pool: its data size).
    pub size: u64,
    /// Its tags.
    pub tags: Vec<String>,
    /// The thin pool a thin LV lives in.
    pub pool: String,
    /// The LV a snapshot was taken of.
    pub origin: String,
    /// Thin pools and thin LVs: percent of data in use.
    pub data_percent: Option<f64>,
    /// Thin pools: percent of metadata in use.
    pub metadata_percent: Option<f64>,
    /// Thin pools: the metadata LV's size in bytes.
    pub metadata_size: Option<u64>,
    /// The VG's extent size in bytes: LV sizes are rounded up to a multiple of it.
    pub extent_size: u64,
    /// Thin LVs: the thin device's id in the pool's metadata (what `thin_delta` names).
    pub thin_id: Option<u64>,
    /// Thin pools: the data block size in bytes (what a discard unmaps whole).
    pub chunk_size: u64,
}

impl Lv {
    /// Whether the LV is a thin pool (`t` in the first attribute column).
    pub fn is_thin_pool(&self) -> bool {
        self.attr.starts_with('t')
    }

    /// Whether the LV is active (`a` in the fifth attribute column).
    pub fn is_active(&self) -> bool {
        self.attr.chars().nth(4) == Some('a')
    }
}

#[derive(Deserialize)]
struct Report {
    report: Vec<Section>,
}

#[derive(Deserialize)]
struct Section {
    #[serde(default)]
    lv: Vec<Row>,
}

#[derive(Deserialize)]
struct Row {
    lv_name: String,
    #[serde(default)]
    lv_attr: String,
    #[serde(default)]
    lv_size: String,
    #[serde(default)]
    lv_tags: String,
    #[serde(default)]
    pool_lv: String,
    #[serde(default)]
    origin: String,
    #[serde(default)]
    data_percent: String,
    #[serde(default)]
    metadata_percent: String,
    #[serde(default)]
    lv_metadata_size: String,
    #[serde(default)]
    vg_extent_size: String,
    #[serde(default)]
    thin_id: String,
    #[serde(default)]
    chunk_size: String,
}

fn bytes(field: &str, value: &str) -> Result<u64, String> {
    // `--units b --nosuffix` prints whole bytes; tolerate a trailing `B` all the same.
    value
        .trim()
        .trim_end_matches('B')
        .parse()
        .map_err(|_| format!("lvs: {field} {value:?} is not a byte count"))
}

fn percent(field: &str, value: &str) -> Result<Option<f64>, String> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    value
        .trim()
        .parse()
        .map(Some)
        .map_err(|_| format!("lvs: {field} {value:?} is not a percentage"))
}

/// Parse `lvs --reportformat json --units b --nosuffix -o` [`COLUMNS`] output.
pub fn parse_lvs(json: &str) -> Result<Vec<Lv>, String> {
    let report: Report =
        serde_json::from_str(json).map_err(|e| format!("lvs printed unexpected JSON: {e}"))?;
    let mut out = Vec::new();
    for row in report.report.into_iter().flat_map(|s| s.lv) {
        out.push(Lv {
            size: bytes("lv_size", &row.lv_size)?,
            tags: row
                .lv_tags
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            data_percent: percent("data_percent", &row.data_percent)?,
            metadata_percent: percent("metadata_percent", &row.metadata_percent)?,
            metadata_size: if row.lv_metadata_size.trim().is_empty() {
                None
            } else {
                Some(bytes("lv_metadata_size", &row.lv_metadata_size)?)
            },
            extent_size: bytes("vg_extent_size", &row.vg_extent_size)?,
            chunk_size: match row.chunk_size.trim() {
                "" => 0,
                c => bytes("chunk_size", c)?,
            },
            thin_id: match row.thin_id.trim() {
                "" => None,
                t => Some(
                    t.parse()
                        .map_err(|_| format!("lvs: thin_id {t:?} is not a number"))?,
                ),
            },
            name: row.lv_name,
            attr: row.lv_attr,
            pool: row.pool_lv,
            origin: row.origin,
        });
    }
    Ok(out)
}

/// Whether a failed LVM command said the LV does not exist.
pub fn is_missing_lv(stderr: &str) -> bool {
    // Only the LV: a missing volume group is an error, not "already gone".
    stderr.contains("Failed to find logical volume")
}

/// `lvs` of the whole VG, or of one LV when `lv` is given.
pub fn lvs(vg: &str, lv: Option<&str>) -> Cmd {
    let target = match lv {
        Some(lv) => format!("{vg}/{lv}"),
        None => vg.to_string(),
    };
    Cmd::new("lvs").args([
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        COLUMNS,
        &target,
    ])
}

fn with_tags(mut cmd: Cmd, flag: &str, tags: &[String]) -> Cmd {
    for t in tags {
        cmd = cmd.arg(flag).arg(t.clone());
    }
    cmd
}

/// A thin LV of `size` bytes in `vg/thin_pool`, tagged.
pub fn create_thin(vg: &str, thin_pool: &str, lv: &str, size: u64, tags: &[String]) -> Cmd {
    let cmd = Cmd::new("lvcreate").args([
        "--type",
        "thin",
        "--virtualsize",
        &format!("{size}b"),
        "--thinpool",
        thin_pool,
        "--name",
        lv,
        "--wipesignatures",
        "n",
        "--yes",
    ]);
    with_tags(cmd, "--addtag", tags).arg(vg)
}

/// A thin snapshot `lv` of `vg/origin`. A snapshot keeps LVM's activation skip (it is not
/// activated, so it has no device node and cannot be written); a clone (`writable`) is
/// activated at once.
pub fn create_snapshot(vg: &str, origin: &str, lv: &str, writable: bool, tags: &[String]) -> Cmd {
    let mut cmd = Cmd::new("lvcreate").args(["--snapshot", "--name", lv]);
    if writable {
        cmd = cmd.args(["--setactivationskip", "n", "--activate", "y"]);
    }
    with_tags(cmd, "--addtag", tags).arg(format!("{vg}/{origin}"))
}

/// Grow `vg/lv` to `size` bytes.
pub fn extend(vg: &str, lv: &str, size: u64) -> Cmd {
    Cmd::new("lvextend").args(["--size", &format!("{size}b"), &format!("{vg}/{lv}")])
}

/// Replace tags on `vg/lv` in one metadata update.
pub fn retag(vg: &str, lv: &str, remove: &[String], add: &[String]) -> Cmd {
    let cmd = with_tags(Cmd::new("lvchange"), "--deltag", remove);
    with_tags(cmd, "--addtag", add).arg(format!("{vg}/{lv}"))
}

/// Rename `vg/from` to `vg/to` (an active, even open, LV keeps its device: only the name
/// and the `/dev/<vg>/` link change).
pub fn rename(vg: &str, from: &str, to: &str) -> Cmd {
    Cmd::new("lvrename").args([vg, from, to])
}

/// Remove `vg/lv`.
pub fn remove(vg: &str, lv: &str) -> Cmd {
    Cmd::new("lvremove").args(["--yes", &format!("{vg}/{lv}")])
}

/// Activate `vg/lv` even though it skips activation (a snapshot, to read it for a send), or
/// deactivate it.
pub fn activate(vg: &str, lv: &str, on: bool) -> Cmd {
    let cmd = Cmd::new("lvchange");
    let cmd = if on {
        cmd.args(["--activate", "y", "--ignoreactivationskip"])
    } else {
        cmd.args(["--activate", "n"])
    };
    cmd.arg(format!("{vg}/{lv}"))
}

/// Mark `vg/lv` to skip activation, as a snapshot is (a received snapshot was made as a
/// writable, activated LV).
pub fn skip_activation(vg: &str, lv: &str) -> Cmd {
    Cmd::new("lvchange").args(["--setactivationskip", "y", &format!("{vg}/{lv}")])
}

/// Activate every LV of `vg` that is not marked to skip activation (shares and the thin
/// pool; read-only snapshots stay inactive).
pub fn activate_vg(vg: &str) -> Cmd {
    Cmd::new("vgchange").args(["--activate", "y", vg])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_argv_without_a_shell() {
        let c = create_thin("vg0", "tp", "shelf-1", 1 << 30, &["shelf.a.0.rb".into()]);
        assert_eq!(
            c.display(),
            "lvcreate --type thin --virtualsize 1073741824b --thinpool tp --name shelf-1 \
             --wipesignatures n --yes --addtag shelf.a.0.rb vg0"
        );
        let s = create_snapshot("vg0", "shelf-1", "shelf-snap-2", false, &[]);
        assert_eq!(
            s.display(),
            "lvcreate --snapshot --name shelf-snap-2 vg0/shelf-1"
        );
        let r = retag("vg0", "shelf-1", &["old".into()], &["new".into()]);
        assert_eq!(
            r.display(),
            "lvchange --deltag old --addtag new vg0/shelf-1"
        );
        let w = create_snapshot("vg0", "shelf-snap-2", "shelf-1-revert", true, &[]);
        assert_eq!(
            w.display(),
            "lvcreate --snapshot --name shelf-1-revert --setactivationskip n --activate y \
             vg0/shelf-snap-2"
        );
        assert_eq!(
            rename("vg0", "shelf-1", "shelf-1-revert-old").display(),
            "lvrename vg0 shelf-1 shelf-1-revert-old"
        );
        assert_eq!(
            lvs("vg0", Some("x")).argv().last().map(String::as_str),
            Some("vg0/x")
        );
    }

    #[test]
    fn parses_a_synthetic_report() {
        let json = r#"{"report":[{"lv":[
            {"lv_name":"tp","lv_attr":"twi-aotz--","lv_size":"2147483648","lv_tags":"",
             "pool_lv":"","origin":"","data_percent":"1.50","metadata_percent":"10.21",
             "lv_metadata_size":"4194304","vg_extent_size":"4194304"},
            {"lv_name":"shelf-a","lv_attr":"Vwi-a-tz--","lv_size":"1073741824",
             "lv_tags":"shelf.kind.0.rshare,shelf.id.0.ra","pool_lv":"tp","origin":"",
             "data_percent":"0.00","metadata_percent":"","lv_metadata_size":"",
             "vg_extent_size":"4194304"}]}]}"#;
        let lvs = parse_lvs(json).unwrap();
        assert_eq!(lvs.len(), 2);
        assert!(lvs[0].is_thin_pool() && lvs[0].is_active());
        assert_eq!(lvs[0].metadata_percent, Some(10.21));
        assert_eq!(lvs[0].metadata_size, Some(4 << 20));
        assert_eq!(lvs[1].tags, vec!["shelf.kind.0.rshare", "shelf.id.0.ra"]);
        assert_eq!(lvs[1].metadata_percent, None);
        assert!(parse_lvs("{}").is_err());
        assert!(parse_lvs(
            r#"{"report":[{"lv":[{"lv_name":"x","lv_size":"big","vg_extent_size":"1"}]}]}"#
        )
        .is_err());
    }

    /// `lvs` of the VG, recorded in the VM tier after share create, snapshot, clone and
    /// resize (tests/vm/guest.sh).
    #[test]
    fn parses_recorded_lvs_of_a_volume_group() {
        let lvs = parse_lvs(include_str!("../../../tests/fixtures/lvm/lvs-shelfvg.json")).unwrap();
        let tp = lvs.iter().find(|l| l.name == "tp").unwrap();
        assert!(tp.is_thin_pool() && tp.is_active());
        assert_eq!((tp.size, tp.metadata_size), (1 << 30, Some(4 << 20)));
        let files = lvs.iter().find(|l| l.name == "files").unwrap();
        assert!(!files.is_thin_pool() && files.data_percent.is_none());
        let snap = lvs
            .iter()
            .find(|l| l.name.starts_with("shelf-snap-"))
            .unwrap();
        assert!(
            !snap.is_active(),
            "thin snapshots skip activation: {}",
            snap.attr
        );
        let share = lvs
            .iter()
            .find(|l| l.tags.iter().any(|t| t == "shelf.name.0.rs1"))
            .unwrap();
        assert_eq!((share.size, share.extent_size), (3 << 30, 4 << 20));
        let id = super::super::tags::decode(share.tags.iter().map(String::as_str)).unwrap();
        assert_eq!(id["metadata"], r#"{"owner":"vm-test"}"#);
        assert_eq!(id["origin_snapshot"], "");
        let clone = lvs
            .iter()
            .find(|l| l.tags.iter().any(|t| t == "shelf.name.0.rc1"))
            .unwrap();
        assert_eq!(clone.origin, snap.name);
    }

    /// The thin pool's row, recorded with 600 MiB written into a 1 GiB thin pool.
    #[test]
    fn parses_recorded_thin_pool_usage() {
        let lvs = parse_lvs(include_str!(
            "../../../tests/fixtures/lvm/lvs-thin-pool-full.json"
        ))
        .unwrap();
        assert_eq!(lvs.len(), 1);
        assert_eq!(lvs[0].data_percent, Some(58.79));
        assert_eq!(lvs[0].metadata_percent, Some(15.62));
    }
}
