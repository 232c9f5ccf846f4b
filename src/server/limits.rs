//! What peers may cost: the shared budget of buffered request bytes, the table of open
//! connections (caps in all and per uid, and which to shed when an admin needs room), and
//! the rate limit on auditing refused connections.
//!
//! Every input here comes from a peer of any role, including none: each structure is
//! bounded by the number of connections, which is itself capped.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_lock::Semaphore;

use super::auth::Role;
use crate::proto::frame::FrameError;

/// Bytes of each frame read without asking the budget: small requests never wait.
pub const FREE_BYTES: usize = 4096;
/// The budget is counted in units of this many bytes.
const UNIT: usize = 4096;
/// How long a growing frame waits for the budget before it is refused.
pub const BUDGET_WAIT: Duration = Duration::from_secs(2);
/// A charge of this many units or more marks the allocator as worth trimming.
const LARGE_UNITS: usize = 16;

/// The budget of request bytes held while frames arrive: one shared by every non-admin
/// connection, and one of the same size that only admins' connections draw on, so no
/// reader can make an admin's frames (an upload chunk) wait for room.
#[derive(Debug)]
pub struct Budget {
    units: Arc<Semaphore>,
    admin_units: Arc<Semaphore>,
    total_units: usize,
    /// Set when a large charge is given back: the allocator holds pages to return.
    dirty: Arc<AtomicBool>,
}

/// Units of the budget one frame holds; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    units: Arc<Semaphore>,
    held: Arc<AtomicUsize>,
    dirty: Arc<AtomicBool>,
}

impl Budget {
    /// A budget of `bytes` (rounded up to whole units).
    pub fn new(bytes: u64) -> Budget {
        let total_units = (bytes as usize).div_ceil(UNIT).max(1);
        Budget {
            units: Arc::new(Semaphore::new(total_units)),
            admin_units: Arc::new(Semaphore::new(total_units)),
            total_units,
            dirty: Arc::new(AtomicBool::new(false)),
        }
    }

    /// An empty charge to grow as a frame's bytes arrive.
    pub fn charge(&self) -> Charge {
        Charge {
            units: self.units.clone(),
            held: Arc::new(AtomicUsize::new(0)),
            dirty: self.dirty.clone(),
        }
    }

    /// An empty charge on the admins' budget, for a frame of an admin's connection.
    pub fn admin_charge(&self) -> Charge {
        Charge {
            units: self.admin_units.clone(),
            held: Arc::new(AtomicUsize::new(0)),
            dirty: self.dirty.clone(),
        }
    }

    /// Whether large frames were let go since the last call and none is held now: then
    /// the allocator's free pages are worth giving back to the kernel.
    pub fn take_trim(&self) -> bool {
        self.used_bytes() == 0 && self.dirty.swap(false, Ordering::Relaxed)
    }

    /// Bytes of both budgets in use now.
    pub fn used_bytes(&self) -> usize {
        (2 * self.total_units
            - self.units.available_permits()
            - self.admin_units.available_permits())
            * UNIT
    }
}

impl Charge {
    /// Take enough units for `bytes` more, waiting up to [`BUDGET_WAIT`] while the budget
    /// is spent; then the frame is refused (its connection closes and gives back what it
    /// held). Waiting without end would let frames that each hold part of what they need
    /// starve one another until their timeouts. The future owns what it needs, so a reader
    /// can hold it while it borrows the stream.
    pub fn grow(
        &self,
        bytes: usize,
    ) -> impl std::future::Future<Output = Result<(), FrameError>> + Send + 'static {
        let (units, held) = (self.units.clone(), self.held.clone());
        async move {
            let got = futures_lite::future::or(
                async {
                    for _ in 0..bytes.div_ceil(UNIT) {
                        units.acquire().await.forget();
                        held.fetch_add(1, Ordering::Relaxed);
                    }
                    true
                },
                async {
                    smol::Timer::after(BUDGET_WAIT).await;
                    false
                },
            )
            .await;
            if got {
                Ok(())
            } else {
                Err(FrameError::BudgetSpent {
                    secs: BUDGET_WAIT.as_secs(),
                })
            }
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let held = self.held.swap(0, Ordering::Relaxed);
        if held > 0 {
            self.units.add_permits(held);
        }
        if held >= LARGE_UNITS {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }
}

/// What the table knows of one open connection.
#[derive(Debug)]
pub struct ConnState {
    /// The peer's uid.
    pub uid: u32,
    /// The role at connect.
    pub role: Role,
    /// Opened at.
    pub opened: Instant,
    /// Milliseconds since `opened` of the last frame or reply.
    pub last_active_ms: AtomicU64,
    /// Requests running and subscriptions open.
    pub busy: AtomicUsize,
    /// Set to ask the connection to close (it was shed).
    pub shed: AtomicBool,
    /// Woken when `shed` is set.
    pub shed_tx: smol::channel::Sender<()>,
}

impl ConnState {
    /// Note activity now.
    pub fn touch(&self) {
        self.last_active_ms
            .store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long since the last frame or reply.
    pub fn idle_for(&self) -> Duration {
        self.opened.elapsed().saturating_sub(Duration::from_millis(
            self.last_active_ms.load(Ordering::Relaxed),
        ))
    }
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The total cap is reached and nothing could be shed.
    Total(usize),
    /// The peer's uid has its cap of connections open.
    PerUid(usize),
}

impl Refusal {
    /// The reason the metrics count it under.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Total(_) => "max_connections",
            Refusal::PerUid(_) => "max_connections_per_uid",
        }
    }
}

/// The open connections.
#[derive(Debug, Default)]
pub struct ConnTable {
    conns: Mutex<BTreeMap<u64, Arc<ConnState>>>,
}

impl ConnTable {
    /// Admit a connection, or say why not. An admin over the total cap sheds the idlest
    /// non-admin connection to make room; admins have no per-uid cap.
    pub fn admit(
        &self,
        id: u64,
        state: Arc<ConnState>,
        max_total: usize,
        max_per_uid: usize,
    ) -> Result<(), Refusal> {
        let mut g = self.conns.lock().expect("connection table");
        if state.role != Role::Admin {
            let same = g.values().filter(|c| c.uid == state.uid).count();
            if same >= max_per_uid {
                return Err(Refusal::PerUid(max_per_uid));
            }
        }
        if g.len() >= max_total {
            if state.role != Role::Admin {
                return Err(Refusal::Total(max_total));
            }
            shed_one(&g);
        }
        g.insert(id, state);
        Ok(())
    }

    /// Forget a closed connection.
    pub fn remove(&self, id: u64) {
        self.conns.lock().expect("connection table").remove(&id);
    }

    /// Shed the idlest non-admin connection (descriptors ran out); `false` if none could be.
    pub fn shed_idlest(&self) -> bool {
        shed_one(&self.conns.lock().expect("connection table"))
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.conns.lock().expect("connection table").len()
    }
}

/// Ask one connection to close: role-less first, then readers; among them one with
/// nothing in flight, the longest idle. Admins are never shed.
fn shed_one(conns: &BTreeMap<u64, Arc<ConnState>>) -> bool {
    let rank = |c: &ConnState| match c.role {
        Role::None => 0,
        Role::Reader => 1,
        Role::Admin => 2,
    };
    let victim = conns
        .values()
        .filter(|c| c.role != Role::Admin && !c.shed.load(Ordering::Relaxed))
        .min_by_key(|c| {
            (
                rank(c),
                c.busy.load(Ordering::Relaxed) > 0,
                std::cmp::Reverse(c.idle_for()),
            )
        });
    match victim {
        Some(c) => {
            c.shed.store(true, Ordering::Relaxed);
            c.shed_tx.close();
            true
        }
        None => false,
    }
}

/// One audit entry per uid and minute for refused connections; counts the rest.
#[derive(Debug, Default)]
pub struct RefusalLog {
    seen: Mutex<HashMap<u32, (Instant, u64)>>,
}

/// How often a uid's refused connections are audited.
pub const REFUSAL_AUDIT_EVERY: Duration = Duration::from_secs(60);
/// Uids remembered at most (older ones are forgotten first).
const REFUSAL_UIDS: usize = 4096;

impl RefusalLog {
    /// Note a refusal of `uid`; `Some(n)` when it is to be audited now, `n` being the
    /// refusals not audited since the last entry for that uid.
    pub fn note(&self, uid: u32) -> Option<u64> {
        let mut g = self.seen.lock().expect("refusal log");
        let now = Instant::now();
        if g.len() >= REFUSAL_UIDS && !g.contains_key(&uid) {
            g.retain(|_, (at, _)| now.duration_since(*at) < REFUSAL_AUDIT_EVERY);
            if g.len() >= REFUSAL_UIDS {
                return None;
            }
        }
        match g.get_mut(&uid) {
            Some((at, suppressed)) if now.duration_since(*at) < REFUSAL_AUDIT_EVERY => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let n = *suppressed;
                *at = now;
                *suppressed = 0;
                Some(n)
            }
            None => {
                g.insert(uid, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(uid: u32, role: Role) -> (Arc<ConnState>, smol::channel::Receiver<()>) {
        let (tx, rx) = smol::channel::bounded(1);
        let s = Arc::new(ConnState {
            uid,
            role,
            opened: Instant::now(),
            last_active_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            shed: AtomicBool::new(false),
            shed_tx: tx,
        });
        (s, rx)
    }

    #[test]
    fn caps_refuse_others_and_admins_shed_readers() {
        let t = ConnTable::default();
        let (r1, r1_rx) = state(5, Role::Reader);
        let (r2, _r2_rx) = state(6, Role::Reader);
        r2.busy.store(1, Ordering::Relaxed);
        assert_eq!(t.admit(1, r1, 2, 1), Ok(()));
        let (again, _) = state(5, Role::Reader);
        assert_eq!(t.admit(2, again, 2, 1), Err(Refusal::PerUid(1)));
        assert_eq!(t.admit(3, r2, 2, 1), Ok(()));
        let (third, _) = state(7, Role::Reader);
        assert_eq!(t.admit(4, third, 2, 1), Err(Refusal::Total(2)));
        // An admin gets in; the idle reader (not the busy one) is asked to go.
        let (admin, _) = state(0, Role::Admin);
        assert_eq!(t.admit(5, admin, 2, 1), Ok(()));
        assert!(r1_rx.is_closed());
        t.remove(1);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn refusals_are_audited_once_a_minute_per_uid() {
        let log = RefusalLog::default();
        assert_eq!(log.note(9), Some(0));
        assert_eq!(log.note(9), None);
        assert_eq!(log.note(9), None);
        assert_eq!(log.note(10), Some(0));
        log.seen.lock().unwrap().get_mut(&9).unwrap().0 -= REFUSAL_AUDIT_EVERY;
        assert_eq!(log.note(9), Some(2));
    }

    #[test]
    fn charges_give_their_units_back() {
        let b = Budget::new(3 * UNIT as u64);
        let c = b.charge();
        smol::block_on(c.grow(2 * UNIT + 1)).unwrap();
        let other = b.charge();
        assert!(
            smol::block_on(other.grow(1)).is_err(),
            "the budget is spent"
        );
        assert_eq!(b.used_bytes(), 3 * UNIT);
        // The admins' budget is apart: spent others' do not hold an admin's frame up.
        let admin = b.admin_charge();
        smol::block_on(admin.grow(3 * UNIT)).unwrap();
        assert!(smol::block_on(b.admin_charge().grow(1)).is_err());
        drop(c);
        drop(admin);
        assert_eq!(b.used_bytes(), 0);
    }
}
