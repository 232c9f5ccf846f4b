//! Tests of the whole exposition ([`super::render`]).

use super::*;
use crate::engine::JobFigures;
use crate::model::PoolKind;

fn pool(name: &str) -> PoolInfo {
    PoolInfo {
        name: name.into(),
        kind: PoolKind::File,
        path: "/p".into(),
        size: 100,
        used: 40,
        free: 60,
        provisioned: 150,
        allocated: Some(30),
        discard: None,
        shares: 1,
        snapshots: 0,
        reflink: true,
        reserved: 10,
        reserved_percentage: 10,
        max_over_subscription_ratio: 2.0,
        provisioning_limit: 180,
        available_to_provision: 30,
    }
}

fn full() -> String {
    let mut g = Gauges::default();
    g.pools.push(pool("p"));
    g.unreadable.push(("broken".into(), "gone".into()));
    g.counts.shares.push(("p".into(), "available".into(), 1));
    g.counts.snapshots.push(("p".into(), "available".into(), 2));
    let export = ("tgt".into(), "iscsi".into(), "available".into(), 1);
    g.counts.exports.push(export);
    g.counts.attachments.push(("tgt".into(), "iscsi".into(), 1));
    g.counts.intents.push(("share.resize".into(), 1));
    let figures = JobFigures {
        jobs: 2,
        done_bytes: 5,
    };
    g.jobs
        .insert(("image.import".into(), "done".into()), figures);
    g.drivers.push(("tgt".into(), true));
    let reg = Registry::default();
    reg.observe_request("share.show", "not_found", Duration::from_millis(2));
    let _c = reg.open_connection("admin");
    reg.refuse("no_role");
    reg.reconciled(&[]);
    reg.http_reply(200);
    render(Some(&g), &reg, Duration::from_millis(3))
}

#[test]
fn every_family_has_help_and_type_once_and_is_documented() {
    let text = full();
    let doc = include_str!("../../docs/metrics.md");
    let types: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
    assert_eq!(types.len(), helps);
    let mut unique = types.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), types.len(), "a family written twice");
    for name in types {
        assert!(
            doc.contains(&format!("`{name}`")),
            "{name} is not in docs/metrics.md"
        );
    }
    assert!(
        text.contains("shelf_pool_readable{pool=\"broken\"} 0\n"),
        "{text}"
    );
    assert!(text.contains("shelf_pool_allocated_bytes{pool=\"p\"} 30\n"));
    assert!(text.contains("shelf_job_done_bytes{op=\"image.import\",state=\"done\"} 5\n"));
}

#[test]
fn without_the_engines_figures_the_counters_are_still_reported() {
    let text = render(None, &Registry::default(), Duration::ZERO);
    assert!(text.contains("shelf_collect_success 0\n"));
    assert!(text.contains("# TYPE shelf_request_duration_seconds histogram\n"));
    assert!(!text.contains("shelf_pool_size_bytes"));
}

#[test]
fn an_exposition_is_reused_while_young_or_for_scrapes_it_answers() {
    let ended = Instant::now();
    let last = Last {
        answers: 5,
        ended,
        text: "x".into(),
    };
    let second = Duration::from_secs(1);
    // Scrapes that arrived while it was collected share it, however old.
    assert!(reusable(&last, 5, ended + 10 * second, Duration::ZERO));
    // A later one reuses it only while it is younger than min_interval.
    assert!(reusable(&last, 6, ended + second / 2, second));
    assert!(!reusable(&last, 6, ended + second, second));
    assert!(!reusable(&last, 6, ended, Duration::ZERO));
}
