//! Human output: aligned tables with human sizes.

use ciborium::Value;

use shelf::client::{get, get_text, get_u64};
use shelf::model::format_size;

/// How to print a result.
#[derive(Debug)]
pub enum Kind {
    Hello,
    Pools,
    Pool,
    Shares,
    Share,
    Snapshots,
    Snapshot,
    Tree,
    Exports,
    Export,
    Attachments,
    Changed(&'static str),
    Deleted,
    /// `verify`'s differences.
    Verify,
    /// Audit entries.
    Audit,
    Raw,
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>| -> String {
        let mut s = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    out.push_str(&line(headers.iter().map(|h| h.to_string()).collect()));
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

fn t(v: &Value, k: &str) -> String {
    get_text(v, k).unwrap_or("-").to_string()
}

fn sz(v: &Value, k: &str) -> String {
    get_u64(v, k).map(format_size).unwrap_or_else(|| "-".into())
}

fn items(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn share_rows(v: &[Value]) -> String {
    table(
        &["NAME", "POOL", "SIZE", "LAYOUT", "STATE", "ORIGIN", "ID"],
        v.iter()
            .map(|s| {
                vec![
                    t(s, "name"),
                    t(s, "pool"),
                    sz(s, "size"),
                    get_text(s, "filesystem")
                        .map(str::to_string)
                        .unwrap_or_else(|| "block".into()),
                    t(s, "state"),
                    get_text(s, "origin_snapshot")
                        .map(|o| o[..8.min(o.len())].to_string())
                        .unwrap_or_else(|| "-".into()),
                    t(s, "id"),
                ]
            })
            .collect(),
    )
}

fn snapshot_rows(v: &[Value]) -> String {
    table(
        &["NAME", "SHARE", "POOL", "SIZE", "STATE", "ID"],
        v.iter()
            .map(|s| {
                vec![
                    t(s, "name"),
                    t(s, "share_name"),
                    t(s, "pool"),
                    sz(s, "size"),
                    t(s, "state"),
                    t(s, "id"),
                ]
            })
            .collect(),
    )
}

fn export_rows(v: &[Value]) -> String {
    table(
        &["SHARE", "PROTOCOL", "DRIVER", "STATE", "TARGET", "CLIENTS"],
        v.iter()
            .map(|e| {
                let mut clients: Vec<String> = items(
                    get(get(e, "options").unwrap_or(&Value::Null), "clients")
                        .unwrap_or(&Value::Null),
                )
                .iter()
                .filter_map(|c| c.as_text().map(str::to_string))
                .collect();
                for a in items(get(e, "attached").unwrap_or(&Value::Null)) {
                    clients.push(format!("{} (attached)", t(&a, "client")));
                }
                vec![
                    t(e, "share_name"),
                    t(e, "protocol"),
                    t(e, "driver"),
                    t(e, "state"),
                    t(e, "target"),
                    if clients.is_empty() {
                        "-".into()
                    } else {
                        clients.join(", ")
                    },
                ]
            })
            .collect(),
    )
}

fn attachment_rows(v: &[Value]) -> String {
    table(
        &["SHARE", "PROTOCOL", "HOST", "CLIENT", "MODE", "ID"],
        v.iter()
            .map(|a| {
                vec![
                    t(a, "share_name"),
                    t(a, "protocol"),
                    t(a, "host"),
                    t(a, "client"),
                    t(a, "mode"),
                    t(a, "id"),
                ]
            })
            .collect(),
    )
}

fn pool_rows(v: &[Value]) -> String {
    table(
        &[
            "NAME",
            "KIND",
            "SIZE",
            "USED",
            "FREE",
            "PROVISIONED",
            "ALLOCATED",
            "SHARES",
            "SNAPSHOTS",
            "RESERVED",
            "LIMIT",
            "REFLINK",
            "PATH",
        ],
        v.iter()
            .map(|p| {
                vec![
                    t(p, "name"),
                    t(p, "kind"),
                    sz(p, "size"),
                    sz(p, "used"),
                    sz(p, "free"),
                    sz(p, "provisioned"),
                    sz(p, "allocated"),
                    get_u64(p, "shares").unwrap_or(0).to_string(),
                    get_u64(p, "snapshots").unwrap_or(0).to_string(),
                    sz(p, "reserved"),
                    sz(p, "provisioning_limit"),
                    match get(p, "reflink") {
                        Some(Value::Bool(true)) => "yes".into(),
                        _ => "no".into(),
                    },
                    t(p, "path"),
                ]
            })
            .collect(),
    )
}

fn tree_lines(node: &Value, indent: usize, out: &mut String) {
    out.push_str(&format!(
        "{:indent$}{} ({}, {}, {})\n",
        "",
        t(node, "name"),
        sz(node, "size"),
        t(node, "state"),
        t(node, "pool")
    ));
    for snap in items(get(node, "snapshots").unwrap_or(&Value::Null)) {
        out.push_str(&format!(
            "{:w$}@{} ({})\n",
            "",
            t(&snap, "name"),
            sz(&snap, "size"),
            w = indent + 2
        ));
        for clone in items(get(&snap, "clones").unwrap_or(&Value::Null)) {
            tree_lines(&clone, indent + 4, out);
        }
    }
}

/// `share.show`'s `allocated` beside the size (nothing from a server without it).
fn allocated_line(v: &Value) -> String {
    match get_u64(v, "allocated") {
        Some(a) => format!("  allocated {} of {}\n", format_size(a), sz(v, "size")),
        None => String::new(),
    }
}

fn metadata_lines(v: &Value) -> String {
    let mut s = String::new();
    if let Some(Value::Map(m)) = get(v, "metadata") {
        for (k, val) in m {
            s.push_str(&format!(
                "  {} = {}\n",
                k.as_text().unwrap_or("?"),
                val.as_text().unwrap_or("?")
            ));
        }
    }
    s
}

/// `node <id> (<name>)` of a hello, or nothing from a server that has no `node`.
fn node_line(v: &Value) -> String {
    match get(v, "node") {
        Some(n) => format!(
            "node {} ({})\n",
            shelf::model::escape_for_display(get_text(n, "id").unwrap_or("-")),
            shelf::model::escape_for_display(get_text(n, "name").unwrap_or("-"))
        ),
        None => String::new(),
    }
}

/// Render a result for a person.
pub fn render(kind: &Kind, v: &Value) -> String {
    match kind {
        Kind::Hello => format!(
            "{} {} (protocols {:?}; features: {})\n{}",
            t(v, "server"),
            t(v, "version"),
            items(get(v, "protocols").unwrap_or(&Value::Null))
                .iter()
                .filter_map(|p| p.as_integer().map(i128::from))
                .collect::<Vec<_>>(),
            items(get(v, "features").unwrap_or(&Value::Null))
                .iter()
                .filter_map(|f| f.as_text().map(str::to_string))
                .collect::<Vec<_>>()
                .join(", "),
            node_line(v)
        ),
        Kind::Pools => pool_rows(&items(v)),
        Kind::Pool => pool_rows(std::slice::from_ref(v)),
        Kind::Shares => share_rows(&items(v)),
        Kind::Share => {
            share_rows(std::slice::from_ref(v)) + &allocated_line(v) + &metadata_lines(v)
        }
        Kind::Snapshots => snapshot_rows(&items(v)),
        Kind::Snapshot => snapshot_rows(std::slice::from_ref(v)),
        Kind::Tree => {
            let mut out = String::new();
            for n in items(v) {
                tree_lines(&n, 0, &mut out);
            }
            out
        }
        Kind::Exports => export_rows(&items(v)),
        Kind::Export => export_rows(std::slice::from_ref(v)),
        Kind::Attachments => attachment_rows(&items(v)),
        Kind::Changed(key) => {
            let obj = get(v, key).cloned().unwrap_or(Value::Null);
            let note = match get(v, "changed") {
                Some(Value::Bool(false)) => "(already so; nothing changed)\n",
                _ => "",
            };
            let body = match *key {
                "snapshot" => snapshot_rows(std::slice::from_ref(&obj)),
                "export" => export_rows(std::slice::from_ref(&obj)),
                _ => share_rows(std::slice::from_ref(&obj)),
            };
            body + note
        }
        Kind::Deleted => format!("deleted {}\n", t(v, "deleted")),
        Kind::Verify => verify_lines(v),
        Kind::Audit => audit_rows(v),
        Kind::Raw => String::new(),
    }
}

fn verify_lines(v: &Value) -> String {
    let diffs = items(get(v, "differences").unwrap_or(&Value::Null));
    if diffs.is_empty() {
        return "clean: database, pools and exports agree\n".into();
    }
    table(
        &["AREA", "KIND", "OBJECT", "DETAIL"],
        diffs
            .iter()
            .map(|d| vec![t(d, "area"), t(d, "kind"), t(d, "object"), t(d, "detail")])
            .collect(),
    )
}

/// The audit log as a table. Every text a peer could choose (target, message, key, and
/// all the others for good measure) is printed with control characters, bidirectional
/// overrides and backslashes escaped, so each entry is exactly one line and cannot pass
/// for another; `--json` prints the exact strings (JSON escapes them itself).
fn audit_rows(reply: &Value) -> String {
    let entries = items(get(reply, "entries").unwrap_or(reply));
    let mut out = table(
        &[
            "SEQ", "AT_MS", "UID", "PID", "ROLE", "OP", "TARGET", "OUTCOME", "COUNT", "MESSAGE",
        ],
        entries
            .iter()
            .map(|e| {
                let n = |k: &str| {
                    get(e, k)
                        .and_then(Value::as_integer)
                        .map(|i| i128::from(i).to_string())
                        .unwrap_or_else(|| "-".into())
                };
                let shown = |k: &str| shelf::model::escape_for_display(&t(e, k));
                vec![
                    n("seq"),
                    n("at_ms"),
                    n("uid"),
                    n("pid"),
                    shown("role"),
                    shown("op"),
                    shown("target"),
                    shown("outcome"),
                    n("count"),
                    shown("message"),
                ]
            })
            .collect(),
    );
    if let Some(totals) = get(reply, "totals") {
        out.push_str(&audit_totals_line(totals));
    }
    out
}

/// The footer: what the log recorded, aggregated and dropped.
fn audit_totals_line(totals: &Value) -> String {
    let n = |kind: &str, k: &str| {
        get(totals, kind)
            .and_then(|t| get_u64(t, k))
            .unwrap_or_default()
    };
    let mut line = format!(
        "changes: {} entries kept, {} dropped by retention; refusals: {} requests in {} entries \
         ({} aggregated), {} entries ({} requests) dropped by retention",
        n("changes", "entries"),
        n("changes", "dropped_entries"),
        n("refusals", "requests"),
        n("refusals", "entries"),
        n("refusals", "aggregated"),
        n("refusals", "dropped_entries"),
        n("refusals", "dropped_requests"),
    );
    match get_u64(totals, "unwritten") {
        Some(0) | None => {}
        Some(u) => line.push_str(&format!("; {u} entries could not be written")),
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_show_allocated_next_to_provisioned() {
        let pool = shelf::client::from_json(&serde_json::json!({
            "name": "default", "kind": "file", "size": 10u64 << 30, "used": 1u64 << 30,
            "free": 9u64 << 30, "provisioned": 20u64 << 30, "allocated": 3u64 << 29,
            "shares": 2, "snapshots": 0, "reflink": true, "path": "/p"}));
        let out = render(&Kind::Pool, &pool);
        let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
        let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
        let at = header.iter().position(|h| *h == "PROVISIONED").unwrap();
        assert_eq!(header[at + 1], "ALLOCATED");
        assert_eq!((row[at], row[at + 1]), ("20G", "1.5G"), "{out}");
        // A server without the key: a dash, not a zero.
        let mut old = serde_json::json!({"name": "x", "provisioned": 1});
        old.as_object_mut().unwrap().remove("allocated");
        let out = render(&Kind::Pool, &shelf::client::from_json(&old));
        assert!(out.lines().nth(1).unwrap().contains(" - "), "{out}");
    }

    #[test]
    fn hello_prints_the_node_line_when_the_server_has_one() {
        let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let hello = serde_json::json!({
            "server": "shelfd", "version": "0.1.0", "protocols": [1], "features": ["tree"],
            "node": {"id": id, "name": "shelf1"}});
        let out = render(&Kind::Hello, &shelf::client::from_json(&hello));
        assert_eq!(
            out,
            format!("shelfd 0.1.0 (protocols [1]; features: tree)\nnode {id} (shelf1)\n")
        );
        // A server before node ids: the one line it always printed.
        let mut old = hello.clone();
        old.as_object_mut().unwrap().remove("node");
        let out = render(&Kind::Hello, &shelf::client::from_json(&old));
        assert_eq!(out, "shelfd 0.1.0 (protocols [1]; features: tree)\n");
        // A hostile name cannot end the line or move the cursor.
        let mut evil = hello;
        evil["node"]["name"] = serde_json::json!("x\n\u{1b}[2J");
        let out = render(&Kind::Hello, &shelf::client::from_json(&evil));
        assert_eq!(out.lines().count(), 2, "{out:?}");
    }
}
