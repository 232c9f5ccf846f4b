//! The engine's own answers: `hello`, the drivers' status, and the audit log
//! (recording entries and `audit.list`).

use ciborium::Value;
use serde::Serialize;

use super::{answer, jobs, Engine};
use crate::error::{Error, Result};
use crate::proto::{Answer, Hello, FEATURES, PROTOCOL_VERSIONS};

/// `audit.list {totals: true}`: the entries and the counts.
#[derive(Serialize)]
struct AuditPage<E, C, R> {
    entries: E,
    totals: AuditCounts<C, R>,
}

/// `audit.list`'s `totals`.
#[derive(Serialize)]
struct AuditCounts<C, R> {
    changes: C,
    refusals: R,
    unwritten: u64,
}

impl Engine {
    /// The event bus (subscriptions are made by connections).
    pub fn events(&self) -> &jobs::EventBus {
        &self.events
    }

    /// Record an audit entry. A refusal is queued (refusals are aggregated and written
    /// in batches); any other entry records a state change and is committed before this
    /// returns, so the reply that follows never says `ok` for an unrecorded change.
    pub async fn audit(&self, entry: crate::store::AuditEntry) {
        match entry.kind() {
            crate::store::AuditKind::Refusal => self.store.audit(entry),
            crate::store::AuditKind::Change => self.store.audit_durable(entry).await,
        }
    }

    /// Record how an audited request ended (`entry` carries its outcome). If the
    /// operation's final commit wrote its entry already (`slot`), a success needs nothing
    /// more, and a failure after that commit (a later step) gives that entry the outcome.
    /// Otherwise the entry is recorded as by [`Engine::audit`].
    pub async fn finish_audit(
        &self,
        slot: &crate::store::AuditSlot,
        entry: crate::store::AuditEntry,
    ) {
        let Some(seq) = slot.written() else {
            return self.audit(entry).await;
        };
        if entry.outcome == "ok" {
            return;
        }
        let (outcome, message) = (entry.outcome, entry.message);
        let amended = self
            .store
            .write(move |c| crate::store::set_audit_outcome(c, seq, &outcome, &message))
            .await;
        if let Err(e) = amended {
            log::error!("audit entry {seq}: recording its outcome failed: {e}");
        }
    }

    /// Record a refusal that is not a parsed request's (e.g. a connection refused because
    /// its peer has no role: `op` is `"connect"`). Refusals of one uid, role and op in one
    /// minute become one entry with a count, so a flood costs one row a minute.
    pub fn record_refusal(&self, uid: u32, gid: u32, pid: i32, role: &str, op: &str, why: &str) {
        self.store.audit(crate::store::AuditEntry::refusal(
            uid, gid, pid, role, op, why,
        ));
    }

    /// `audit.list`: audit entries (oldest first, after `since`), with `totals` when
    /// asked: `{entries, totals: {changes, refusals, unwritten}}`.
    pub(super) async fn list_audit(&self, a: crate::proto::AuditListArgs) -> Result<Answer> {
        let limit = a.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(Error::Invalid(format!(
                "limit {limit} must be between 1 and 1000"
            )));
        }
        self.store.flush_audit().await;
        let with_totals = a.totals.unwrap_or(false);
        let (entries, totals) = self
            .store
            .call(move |c| {
                let entries = crate::store::list_audit(c, a.since, limit, a.op.as_deref(), a.uid)?;
                let totals = if with_totals {
                    Some(crate::store::audit_totals(c)?)
                } else {
                    None
                };
                Ok((entries, totals))
            })
            .await?;
        let Some((changes, refusals)) = totals else {
            return answer(Answer::read(&entries));
        };
        answer(Answer::read(&AuditPage {
            entries,
            totals: AuditCounts {
                changes,
                refusals,
                unwritten: self.store.audit_unwritten(),
            },
        }))
    }

    /// `drivers` (each driver's cached status), `drivers_age_ms` (how old the oldest
    /// probe is) and `driver_transports`, added to a hello or pool.show answer.
    pub(super) fn with_driver_status(&self, a: Answer) -> Answer {
        let (drivers, age) = self.driver_status();
        a.with("drivers", drivers)
            .with("drivers_age_ms", Value::Integer(age.into()))
            .with("driver_transports", self.driver_transports())
    }

    /// `hello`'s fixed part: who we are and what we speak.
    pub(super) fn hello(&self) -> Hello {
        Hello {
            server: crate::SERVER_NAME,
            version: crate::VERSION,
            protocols: PROTOCOL_VERSIONS,
            features: FEATURES,
            node: self.node.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{map, to_value};
    use std::collections::BTreeMap;

    /// `audit.list {totals: true}` encodes as the hand-built map it replaced.
    #[test]
    fn the_audit_page_is_the_old_entries_and_totals_map() {
        let entries = vec![BTreeMap::from([("op", "share.create")])];
        let (changes, refusals) = (BTreeMap::from([("share.create", 1)]), 0u64);
        let new = Answer::read(&AuditPage {
            entries: entries.clone(),
            totals: AuditCounts {
                changes: changes.clone(),
                refusals,
                unwritten: 3,
            },
        })
        .unwrap();
        let old = map(vec![
            ("entries", to_value(&entries).unwrap()),
            (
                "totals",
                map(vec![
                    ("changes", to_value(&changes).unwrap()),
                    ("refusals", to_value(&refusals).unwrap()),
                    ("unwritten", Value::Integer(3.into())),
                ]),
            ),
        ]);
        let bytes = |v: &Value| {
            let mut out = Vec::new();
            ciborium::into_writer(v, &mut out).unwrap();
            out
        };
        assert_eq!(bytes(new.value().unwrap()), bytes(&old));
    }
}
