//! Reading `tgtadm --op show`: what tgtd reports about its targets and accounts.
//!
//! The output is tgtd's (trusted, from the daemon the driver talks to); parsing is pure
//! and tested against output recorded from a real tgtd (`tests/fixtures/`).

use std::collections::{BTreeMap, BTreeSet};

/// What one target looks like, as configured or as `tgtadm --op show` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TgtTarget {
    /// Target id.
    pub tid: u32,
    /// Target name.
    pub iqn: String,
    /// LUN number → backing store path (LUN 0, the controller, is left out).
    pub luns: BTreeMap<u32, String>,
    /// The LUNs that advertise logical block provisioning (`thin_provisioning=1`; tgtd's
    /// `Thin-provisioning: Yes`): UNMAP punches holes in their backing files.
    pub thin: BTreeSet<u32>,
    /// Bound CHAP accounts.
    pub accounts: BTreeSet<String>,
    /// ACL entries (initiator names or addresses).
    pub acl: BTreeSet<String>,
}

/// Parse the output of `tgtadm --op show --mode target`.
pub fn parse_show_target(text: &str) -> Vec<TgtTarget> {
    #[derive(PartialEq)]
    enum Section {
        Other,
        Lun(u32),
        Accounts,
        Acl,
    }
    let mut out: Vec<TgtTarget> = Vec::new();
    let mut section = Section::Other;
    for line in text.lines() {
        if let Some((tid, iqn)) = line
            .strip_prefix("Target ")
            .and_then(|r| r.split_once(": "))
        {
            if let Ok(tid) = tid.trim().parse() {
                out.push(TgtTarget {
                    tid,
                    iqn: iqn.trim().to_string(),
                    ..Default::default()
                });
                section = Section::Other;
                continue;
            }
        }
        let Some(cur) = out.last_mut() else { continue };
        let trimmed = line.trim();
        let indent = line.len() - line.trim_start().len();
        if indent == 4 {
            section = match trimmed {
                "Account information:" => Section::Accounts,
                "ACL information:" => Section::Acl,
                _ => Section::Other,
            };
            continue;
        }
        match section {
            Section::Accounts if indent >= 8 && !trimmed.is_empty() => {
                cur.accounts
                    .insert(trimmed.trim_end_matches(" (outgoing)").to_string());
            }
            Section::Acl if indent >= 8 && !trimmed.is_empty() => {
                cur.acl.insert(trimmed.to_string());
            }
            Section::Other | Section::Lun(_) => {
                if let Some(n) = trimmed.strip_prefix("LUN: ") {
                    section = n.parse().map(Section::Lun).unwrap_or(Section::Other);
                } else if let (Section::Lun(n), Some(p)) =
                    (&section, trimmed.strip_prefix("Backing store path: "))
                {
                    if *n != 0 {
                        cur.luns.insert(*n, p.to_string());
                    }
                } else if let (Section::Lun(n), Some("Yes")) =
                    (&section, trimmed.strip_prefix("Thin-provisioning: "))
                {
                    if *n != 0 {
                        cur.thin.insert(*n);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Parse the output of `tgtadm --op show --mode account`.
pub fn parse_show_accounts(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("Account list:"))
        .skip(1)
        .map(|l| l.trim().trim_end_matches(" (outgoing)").to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str = include_str!("../../../tests/fixtures/tgtadm-show-target.txt");

    #[test]
    fn parses_recorded_show_output() {
        let t = parse_show_target(SHOW);
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].tid, 1);
        assert_eq!(t[0].iqn, "iqn.2026-11.org.example.shelf:vol1");
        assert_eq!(t[0].luns.get(&1).map(String::as_str), Some("/tmp/tgtx/vol"));
        assert!(!t[0].luns.contains_key(&0), "the controller LUN is skipped");
        assert_eq!(t[0].accounts.iter().collect::<Vec<_>>(), ["shelf-u1"]);
        assert_eq!(t[0].acl.len(), 2);
        assert!(t[0].acl.contains("iqn.1993-08.org.debian:01:abc"));
        assert_eq!(t[1].tid, 3);
        assert_eq!(
            t[1].luns.get(&1).map(String::as_str),
            Some("/tmp/tgtx/vol2")
        );
        assert!(t[1].acl.is_empty() && t[1].accounts.is_empty());
        assert_eq!(t[2].iqn, "iqn.2020-01.com.other:foreign");
        assert!(t[2].luns.is_empty());
    }

    /// Recorded from tgtd 1.0.85 after `--op update --params thin_provisioning=1` on
    /// target 1's LUN 1 (target 2's LUN stayed fully provisioned).
    const SHOW_THIN: &str = include_str!("../../../tests/fixtures/tgtadm-show-target-thin.txt");

    #[test]
    fn parses_thin_provisioning() {
        let t = parse_show_target(SHOW_THIN);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].thin.iter().collect::<Vec<_>>(), [&1]);
        assert!(t[1].thin.is_empty() && t[1].luns.contains_key(&1));
        assert!(parse_show_target(SHOW).iter().all(|t| t.thin.is_empty()));
    }

    #[test]
    fn parses_accounts() {
        assert_eq!(
            parse_show_accounts("Account list:\n    shelf-u1\n    other (outgoing)\n"),
            ["shelf-u1", "other"]
        );
        assert!(parse_show_accounts("Account list:\n").is_empty());
    }
}
