//! The event stream.
//!
//! Events (a job's progress and end, and each object a request created, changed or
//! deleted) get a sequence number and go to every subscribed connection; the newest
//! [`EVENT_BACKLOG`] stay in memory so a client that reconnects can resume from the last
//! sequence it saw.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// Events kept for clients that resume.
pub const EVENT_BACKLOG: usize = 10_000;
/// Events queued for one subscriber before it is dropped (it then resumes with `since`).
/// The queue grows as events wait and shrinks as they go: an idle subscriber costs a few
/// hundred bytes, not room for this many events.
pub const SUBSCRIBER_QUEUE: usize = 4096;

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Sequence number, increasing by one per event within an epoch.
    pub seq: u64,
    /// Changes at every start of shelfd; a `since` from another epoch cannot be resumed.
    pub epoch: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// `job.progress`, `job.done`, `job.failed`, `job.cancelled`, `object.created`,
    /// `object.changed`, `object.deleted`.
    pub kind: String,
    /// The op behind it.
    pub op: String,
    /// The job id, or the object's id (or name when no id is known).
    pub object: String,
    /// Job progress: done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done: Option<u64>,
    /// Job progress: total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

#[derive(Debug)]
struct BusInner {
    next: u64,
    ring: VecDeque<Event>,
    subscribers: Vec<smol::channel::Sender<Event>>,
}

/// The event bus.
#[derive(Debug)]
pub struct EventBus {
    epoch: String,
    inner: Mutex<BusInner>,
}

/// A subscription: the backlog to send first, whether events were missed, and the live
/// stream.
#[derive(Debug)]
pub struct Subscription {
    /// The epoch of this run of shelfd.
    pub epoch: String,
    /// Events after `since` still in the backlog.
    pub backlog: Vec<Event>,
    /// `true` when events after `since` are no longer in the backlog (or `since` is from
    /// another epoch): the client must re-read the state it cares about.
    pub gap: bool,
    /// Live events.
    pub live: smol::channel::Receiver<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            epoch: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            inner: Mutex::new(BusInner {
                next: 1,
                ring: VecDeque::new(),
                subscribers: Vec::new(),
            }),
        }
    }
}

impl EventBus {
    /// Publish an event to the backlog and every subscriber. A subscriber whose queue is
    /// full is dropped: its stream ends and it resumes with `since`.
    pub fn publish(&self, kind: &str, op: &str, object: &str, progress: Option<(u64, u64)>) {
        let mut g = self.inner.lock().expect("event bus");
        let e = Event {
            seq: g.next,
            epoch: self.epoch.clone(),
            at_ms: crate::store::now_ms(),
            kind: kind.to_string(),
            op: op.to_string(),
            object: object.to_string(),
            done: progress.map(|p| p.0),
            total: progress.map(|p| p.1),
        };
        g.next += 1;
        if g.ring.len() == EVENT_BACKLOG {
            g.ring.pop_front();
        }
        g.ring.push_back(e.clone());
        g.subscribers
            .retain(|s| s.len() < SUBSCRIBER_QUEUE && s.try_send(e.clone()).is_ok());
    }

    /// Subscribe, resuming after `since` (a sequence number of `epoch`) when given.
    pub fn subscribe(&self, since: Option<u64>, epoch: Option<&str>) -> Subscription {
        let mut g = self.inner.lock().expect("event bus");
        // Unbounded only in type: publish drops a subscriber whose queue is full. A bounded
        // channel would allocate all SUBSCRIBER_QUEUE slots up front.
        let (tx, rx) = smol::channel::unbounded();
        g.subscribers.retain(|s| !s.is_closed());
        let (backlog, gap) = match since {
            None => (Vec::new(), false),
            Some(_) if epoch.is_some_and(|e| e != self.epoch) => (Vec::new(), true),
            Some(s) => {
                let oldest = g.ring.front().map(|e| e.seq).unwrap_or(g.next);
                let backlog: Vec<Event> = g.ring.iter().filter(|e| e.seq > s).cloned().collect();
                (backlog, s + 1 < oldest && s + 1 < g.next)
            }
        };
        g.subscribers.push(tx);
        Subscription {
            epoch: self.epoch.clone(),
            backlog,
            gap,
            live: rx,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_resume_from_the_backlog_and_see_gaps() {
        let bus = EventBus::default();
        bus.publish("object.created", "share.create", "a", None);
        bus.publish("object.created", "share.create", "b", None);
        let s = bus.subscribe(Some(1), None);
        assert!(!s.gap);
        assert_eq!(s.backlog.len(), 1);
        assert_eq!(s.backlog[0].object, "b");
        bus.publish("object.deleted", "share.delete", "a", None);
        assert_eq!(s.live.try_recv().unwrap().seq, 3);
        let other = bus.subscribe(Some(1), Some("another-epoch"));
        assert!(other.gap && other.backlog.is_empty());
        let fresh = bus.subscribe(None, None);
        assert!(fresh.backlog.is_empty() && !fresh.gap);
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_dropped() {
        let bus = EventBus::default();
        let s = bus.subscribe(None, None);
        for i in 0..SUBSCRIBER_QUEUE + 1 {
            bus.publish("object.created", "share.create", &i.to_string(), None);
        }
        assert_eq!(s.live.len(), SUBSCRIBER_QUEUE);
        assert!(s.live.is_closed(), "dropped once its queue was full");
        drop(s);
        let _ = bus.subscribe(None, None);
        assert_eq!(
            bus.inner.lock().unwrap().subscribers.len(),
            1,
            "closed ones forgotten"
        );
    }
}
