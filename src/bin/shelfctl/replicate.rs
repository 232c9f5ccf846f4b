//! `shelfctl send` and `shelfctl receive`: a snapshot's send stream to stdout, and from
//! stdin into a share, in bounded memory (one chunk at a time), so that
//! `shelfctl send S | ssh node2 shelfctl receive NAME` moves a snapshot between nodes.
//! The stream's format is docs/replication.md; a summary goes to stderr.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use ciborium::Value;

use shelf::client::{get, get_text, get_u64, to_json, Client, ClientError};
use shelf::proto::{
    ReceiveBeginArgs, ReceiveChunkArgs, ReceiveRef, Request, SnapshotSendArgs, StreamReadArgs,
    StreamRef,
};

fn fail(what: &str, e: ClientError) -> ExitCode {
    match e {
        ClientError::Remote(r) => {
            eprintln!("shelfctl: {what}: {}: {}", r.code, r.message);
            ExitCode::from(1)
        }
        e => {
            eprintln!("shelfctl: {what}: {e}");
            ExitCode::from(3)
        }
    }
}

/// `SHARE@NAME` or an id.
fn snapshot_ref(s: &str) -> (String, Option<String>) {
    match s.split_once('@') {
        Some((share, name)) => (name.to_string(), Some(share.to_string())),
        None => (s.to_string(), None),
    }
}

/// `shelfctl send SNAP [--from BASE]`.
pub fn send(
    socket: &Path,
    key: Option<&str>,
    snapshot: &str,
    from: Option<String>,
    pool: Option<String>,
) -> ExitCode {
    let mut c = match Client::connect(socket) {
        Ok(c) => c,
        Err(e) => return fail("connecting", e),
    };
    let (snapshot, share) = snapshot_ref(snapshot);
    let req = Request::SnapshotSend(SnapshotSendArgs {
        snapshot,
        from,
        share,
        pool,
    });
    let opened = match c.request_keyed(&req, key) {
        Ok(v) => v,
        Err(e) => return fail("snapshot.send", e),
    };
    let stream = get_text(&opened, "stream").unwrap_or_default().to_string();
    let size = get_u64(&opened, "size").unwrap_or(0);
    let mut out = std::io::stdout().lock();
    let mut at = 0u64;
    loop {
        let read = Request::StreamRead(StreamReadArgs {
            stream: stream.clone(),
            max: None,
        });
        let v = match c.request(&read) {
            Ok(v) => v,
            Err(e) => return fail("stream.read", e),
        };
        if get_u64(&v, "offset") != Some(at) {
            eprintln!(
                "shelfctl: stream.read answered offset {:?}, expected {at}",
                get_u64(&v, "offset")
            );
            return ExitCode::from(1);
        }
        let data = match get(&v, "data") {
            Some(Value::Bytes(b)) => b.as_slice(),
            _ => &[],
        };
        if let Err(e) = out.write_all(data) {
            let _ = c.request(&Request::StreamClose(StreamRef { stream }));
            eprintln!("shelfctl: writing the stream: {e}");
            return ExitCode::from(1);
        }
        at += data.len() as u64;
        if matches!(get(&v, "end"), Some(Value::Bool(true))) {
            break;
        }
    }
    if let Err(e) = out.flush() {
        eprintln!("shelfctl: writing the stream: {e}");
        return ExitCode::from(1);
    }
    eprintln!(
        "shelfctl: sent {at} bytes (announced {size}), base {}",
        get_text(&opened, "base").unwrap_or("none (a full stream)")
    );
    ExitCode::SUCCESS
}

/// Fill `buf` from `r` as far as it goes: fewer bytes only at the end of the input.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `shelfctl receive NAME < STREAM`.
pub fn receive(
    socket: &Path,
    key: Option<&str>,
    name: &str,
    pool: Option<String>,
    chunk: usize,
) -> ExitCode {
    let mut c = match Client::connect(socket) {
        Ok(c) => c,
        Err(e) => return fail("connecting", e),
    };
    let begin = Request::ReceiveBegin(ReceiveBeginArgs {
        name: name.to_string(),
        pool,
    });
    let receive = match c.request(&begin) {
        Ok(v) => get_text(&v, "receive").unwrap_or_default().to_string(),
        Err(e) => return fail("snapshot.receive.begin", e),
    };
    let abort = |c: &mut Client| {
        let _ = c.request(&Request::ReceiveAbort(ReceiveRef {
            receive: receive.clone(),
        }));
    };
    let mut input = std::io::stdin().lock();
    let mut buf = vec![0u8; chunk.clamp(512, 16 << 20)];
    let mut offset = 0u64;
    loop {
        let n = match fill(&mut input, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                abort(&mut c);
                eprintln!("shelfctl: reading the stream: {e}");
                return ExitCode::from(1);
            }
        };
        if n == 0 {
            break;
        }
        let req = Request::ReceiveChunk(ReceiveChunkArgs {
            receive: receive.clone(),
            offset,
            data: Value::Bytes(buf[..n].to_vec()),
        });
        if let Err(e) = c.request(&req) {
            // A refused chunk already ended the receive on the server.
            return fail("snapshot.receive.chunk", e);
        }
        offset += n as u64;
    }
    let finish = Request::ReceiveFinish(ReceiveRef {
        receive: receive.clone(),
    });
    match c.request_keyed(&finish, key) {
        Ok(v) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&to_json(&v)).unwrap_or_default()
            );
            eprintln!("shelfctl: received {offset} bytes into share {name}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            abort(&mut c);
            fail("snapshot.receive.finish", e)
        }
    }
}
