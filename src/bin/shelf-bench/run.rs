//! Running one operation on N threads at once and timing every call.

use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use crate::env::Res;
use crate::stats::Samples;

/// Run `op(state, thread, i)` `per_thread` times on each of `threads` threads, each
/// thread with its own state from `make(thread)` (made before the clock starts). Returns
/// every call's latency and the wall time from the common start to the last end.
pub fn measure<S, M, O>(threads: usize, per_thread: usize, make: M, op: O) -> Res<Samples>
where
    M: Fn(usize) -> Res<S> + Sync,
    O: Fn(&mut S, usize, usize) -> Res<()> + Sync,
{
    let barrier = Barrier::new(threads + 1);
    let start: Mutex<Option<Instant>> = Mutex::new(None);
    let results: Vec<Res<(Vec<Duration>, Instant)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, make, op) = (&barrier, &make, &op);
                s.spawn(move || {
                    let state = make(t);
                    barrier.wait();
                    let mut state = state?;
                    let mut lat = Vec::with_capacity(per_thread);
                    for i in 0..per_thread {
                        let t0 = Instant::now();
                        op(&mut state, t, i)?;
                        lat.push(t0.elapsed());
                    }
                    Ok((lat, Instant::now()))
                })
            })
            .collect();
        barrier.wait();
        *start.lock().expect("start lock") = Some(Instant::now());
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a bench thread panicked".into()))
            })
            .collect()
    });
    let t0 = start.lock().expect("start lock").expect("started");
    let mut out = Samples::default();
    let mut end = t0;
    for r in results {
        let (lat, done) = r?;
        out.lat.extend(lat);
        end = end.max(done);
    }
    out.wall = end - t0;
    Ok(out)
}
