//! ListSnapshots' paging tokens: `<created_at>/<snapshot id>`, the sort key of the last
//! entry of a page.

use bpfman_csi::v1::Snapshot as CsiSnapshot;

use crate::ids::Id;

/// The sort key: creation time, then the plugin's snapshot id (appliance, shelf id).
pub type Key = (i64, String);

/// The key of `s`.
pub fn key(s: &CsiSnapshot) -> Key {
    let seconds = s.creation_time.as_ref().map_or(0, |t| t.seconds);
    (seconds, s.snapshot_id.clone())
}

/// The token that resumes after `s`.
pub fn token(s: &CsiSnapshot) -> String {
    let (seconds, id) = key(s);
    format!("{seconds}/{id}")
}

/// The key a token names, `None` when it is not a token [`token`] made.
pub fn parse(t: &str) -> Option<Key> {
    let (seconds, id) = t.split_once('/')?;
    if seconds.is_empty() || !seconds.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return None;
    }
    let seconds = seconds.parse().ok()?;
    Id::parse("starting_token", id).ok()?;
    Some((seconds, id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let s = CsiSnapshot {
            snapshot_id: "a1:s1".into(),
            creation_time: Some(prost_types::Timestamp {
                seconds: 7,
                nanos: 0,
            }),
            ..Default::default()
        };
        assert_eq!(parse(&token(&s)), Some(key(&s)));
        for bad in [
            "",
            "x",
            "7",
            "7/",
            "/a1:s1",
            "x/a1:s1",
            "7/a1",
            "7/a1:s1/../x",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
