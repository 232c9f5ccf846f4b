//! A change's audit entry written in its own transaction (`Store::write_recorded`): with
//! the change or not at all, after the refusals queued before it, and back in its slot
//! when the transaction fails.

use super::*;

fn entry(op: &str, outcome: &str) -> AuditEntry {
    AuditEntry {
        seq: 0,
        at_ms: 1,
        uid: 0,
        gid: 0,
        pid: 1,
        role: "admin".into(),
        op: op.into(),
        target: "v1".into(),
        outcome: outcome.into(),
        message: String::new(),
        key: None,
    }
}

fn rows(c: &Connection) -> Vec<(String, String, String)> {
    let mut stmt = c
        .prepare("SELECT op, outcome, kind FROM audit ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[test]
fn a_recorded_write_commits_its_entry_with_the_change_or_gives_it_back() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let st = Store::open(&dir.path().join("t.db")).await.unwrap();
        // A refusal queued first is written in the same commit, before the change's entry.
        st.audit(entry("share.delete", REFUSED));
        let slot = AuditSlot::new(entry("share.create", "ok"));
        st.write_recorded(&slot, |c| {
            c.execute_batch("CREATE TABLE t (x INTEGER)")?;
            Ok(())
        })
        .await
        .unwrap();
        let seq = slot.written().expect("written with the change");
        assert_eq!(st.audit_backlog(), 0, "the queued refusal went with it");
        let got = st.call(|c| Ok(rows(c))).await.unwrap();
        assert_eq!(
            got,
            [
                ("share.create".into(), "ok".into(), "change".into()),
                ("share.delete".into(), REFUSED.into(), "refusal".into())
            ]
        );
        // A write with no entry waiting is a plain write.
        st.write_recorded(&slot, |c| {
            c.execute_batch("INSERT INTO t VALUES (1)")?;
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(slot.written(), Some(seq));
        // A failed transaction leaves neither the change nor the entry; the entry waits.
        let failing = AuditSlot::new(entry("share.resize", "ok"));
        let r: Result<()> = st
            .write_recorded(&failing, |c| {
                c.execute_batch("INSERT INTO t VALUES (2)")?;
                Err(Error::Busy("no".into()))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(failing.written(), None);
        assert!(failing.take().is_some(), "the entry is back in its slot");
        let (n, entries) = st
            .call(|c| {
                let n: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
                Ok((n, rows(c).len()))
            })
            .await
            .unwrap();
        assert_eq!((n, entries), (1, 2));
        // A later failure amends the entry written as ok.
        st.write(move |c| set_audit_outcome(c, seq, "internal", "after the commit"))
            .await
            .unwrap();
        let got = st.call(|c| Ok(rows(c))).await.unwrap();
        assert_eq!(got[0].1, "internal");
        st.close().await;
    });
}
