//! The floor's socket server: the bare minimum of answering a read-only request (one
//! round trip, one SQLite read, for `share.show` the `stat` its `allocated` needs, a
//! CBOR reply), and its client.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use ciborium::Value;
use rusqlite::Connection;

use crate::env::Res;
use crate::floor::e;

/// One floor client: a connection to the floor's socket server.
#[derive(Debug)]
pub struct FloorConn {
    stream: UnixStream,
}

impl FloorConn {
    /// Connect to the floor's server.
    pub fn connect(socket: &Path) -> Res<FloorConn> {
        Ok(FloorConn {
            stream: UnixStream::connect(socket).map_err(e("connect"))?,
        })
    }
    /// One request and its reply, read as the bench reads shelfd's replies to reads:
    /// the bytes, not decoded (see `calls::read_reply`).
    fn request(&mut self, kind: u8, arg: &str) -> Res<Vec<u8>> {
        let mut body = vec![kind];
        body.extend_from_slice(arg.as_bytes());
        let mut msg = (body.len() as u32).to_be_bytes().to_vec();
        msg.extend(body);
        self.stream.write_all(&msg).map_err(e("send"))?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).map_err(e("receive"))?;
        let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut reply).map_err(e("receive"))?;
        Ok(reply)
    }

    /// share.show: a round trip whose server reads one row and encodes it; returns the
    /// reply's length.
    pub fn show(&mut self, name: &str) -> Res<usize> {
        Ok(self.request(b'S', name)?.len())
    }

    /// share.list of a pool: a round trip whose server reads the rows and encodes them;
    /// returns how many the array holds (read off its header).
    pub fn list(&mut self, pool: &str) -> Res<usize> {
        crate::calls::array_len(&self.request(b'L', pool)?)
    }
}

/// A connection with the same pragmas as shelfd's (WAL, `synchronous = FULL`).
pub fn open_db(path: &Path) -> Res<Connection> {
    let c = Connection::open(path).map_err(e("open db"))?;
    c.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(e("busy timeout"))?;
    c.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
        .map_err(e("WAL"))?;
    c.execute_batch("PRAGMA synchronous = FULL;")
        .map_err(e("pragma"))?;
    Ok(c)
}

/// The floor's socket server: one thread per connection, each with its own reader. Its
/// volumes are under `root` (`shares/<id>/volume`).
pub fn serve(listener: UnixListener, db: PathBuf, root: PathBuf) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { return };
        let (db, root) = (db.clone(), root.clone());
        std::thread::spawn(move || {
            if let Ok(c) = open_db(&db) {
                let _ = serve_conn(conn, &c, &root);
            }
        });
    }
}

/// A share's row as `share.show` answers it: with `device`, its volume's path, and
/// `allocated`, the bytes allocated to it (one `stat`), as shelfd's answer has them.
fn shown(row: Value, root: &Path) -> Res<Value> {
    use std::os::unix::fs::MetadataExt;
    let Value::Map(mut m) = row else {
        return Ok(Value::Null);
    };
    let id = m
        .iter()
        .find(|(k, _)| k.as_text() == Some("id"))
        .and_then(|(_, v)| v.as_text())
        .ok_or("a floor row without id")?;
    let volume = root.join("shares").join(id).join("volume");
    let blocks = std::fs::metadata(&volume)
        .map_err(e("stat volume"))?
        .blocks();
    m.push((
        Value::Text("device".into()),
        Value::Text(volume.display().to_string()),
    ));
    m.push((
        Value::Text("allocated".into()),
        Value::Integer((blocks * 512).into()),
    ));
    Ok(Value::Map(m))
}

fn serve_conn(mut s: UnixStream, db: &Connection, root: &Path) -> Res<()> {
    loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).is_err() {
            return Ok(());
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).map_err(e("read"))?;
        let arg = String::from_utf8_lossy(&body[1..]).into_owned();
        let reply = match body[0] {
            b'S' => match query(db, "WHERE kind = 'share' AND name = ?1 LIMIT 1", &arg)?
                .into_iter()
                .next()
            {
                Some(row) => shown(row, root)?,
                None => Value::Null,
            },
            _ => Value::Array(query(
                db,
                "WHERE kind = 'share' AND pool = ?1 ORDER BY name",
                &arg,
            )?),
        };
        let mut out = Vec::new();
        ciborium::into_writer(&reply, &mut out).map_err(e("encode"))?;
        let mut msg = (out.len() as u32).to_be_bytes().to_vec();
        msg.extend(out);
        s.write_all(&msg).map_err(e("write"))?;
    }
}

/// Rows of `objects` as maps with the keys of a share result.
fn query(db: &Connection, filter: &str, arg: &str) -> Res<Vec<Value>> {
    let sql = format!("SELECT id, name, pool, size, state, created_at, meta FROM objects {filter}");
    let mut st = db.prepare_cached(&sql).map_err(e("prepare"))?;
    let rows = st
        .query_map([arg], |r| {
            let t = |s: &str| Value::Text(s.to_string());
            let text = |i: usize| r.get::<_, String>(i).map(Value::Text);
            let int = |i: usize| r.get::<_, i64>(i).map(|v| Value::Integer(v.into()));
            let meta: String = r.get(6)?;
            Ok(Value::Map(vec![
                (t("id"), text(0)?),
                (t("name"), text(1)?),
                (t("pool"), text(2)?),
                (t("size"), int(3)?),
                (t("sparse"), Value::Bool(true)),
                (t("multiattach"), Value::Bool(false)),
                (t("state"), text(4)?),
                (t("created_at"), int(5)?),
                (t("origin_snapshot"), Value::Null),
                (t("origin_share"), Value::Null),
                (t("layout"), t("block")),
                (t("filesystem"), Value::Null),
                (
                    t("metadata"),
                    Value::Map(if meta == "{}" {
                        vec![]
                    } else {
                        vec![(t("m"), t(&meta))]
                    }),
                ),
            ]))
        })
        .map_err(e("query"))?;
    rows.collect::<Result<Vec<_>, _>>().map_err(e("row"))
}
