//! Calling one shelf appliance: a typed [`Request`] sent with shelf's blocking client on a
//! blocking thread (the gRPC runtime's workers only wait), on a fresh connection per call,
//! with a bound on how long one answer may take. A connection per call costs one socket
//! connect (tens of microseconds) and means a restarted shelfd or ssh forward needs no
//! reconnect logic.

use std::path::PathBuf;
use std::time::Duration;

use ciborium::Value;
use shelf::client::Client;
use shelf::proto::Request;
use tonic::Status;

use crate::config::ApplianceConfig;
use crate::status;

/// How long one shelfd answer may take. shelfd answers a long operation (a clone of a
/// large volume on a pool without reflink, an image job) only when it is done; the
/// sidecars' own timeouts retry idempotently, so this bounds a stuck appliance, not work.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// One appliance as the controller calls it.
#[derive(Debug, Clone)]
pub struct Appliance {
    /// Its name (the topology segment).
    pub name: String,
    /// Its socket.
    pub socket: PathBuf,
    /// The pool for volumes whose StorageClass names none.
    pub pool: Option<String>,
}

impl Appliance {
    /// The appliance of a config entry.
    pub fn new(cfg: &ApplianceConfig) -> Appliance {
        Appliance {
            name: cfg.name.clone(),
            socket: cfg.socket.clone(),
            pool: cfg.pool.clone(),
        }
    }

    /// Send `req` and wait for its answer; a shelf error becomes the CSI status for its
    /// code (status.rs).
    pub async fn call(&self, req: Request) -> Result<Value, Status> {
        self.call_keyed(req, None).await
    }

    /// [`Appliance::call`] with an idempotency key (shelfd answers a repeat of a keyed
    /// change with the first answer, without running it again).
    pub async fn call_keyed(&self, req: Request, key: Option<String>) -> Result<Value, Status> {
        let socket = self.socket.clone();
        let name = self.name.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut client = Client::connect(&socket)?;
            client.set_timeout(Some(CALL_TIMEOUT)).map_err(|source| {
                shelf::client::ClientError::Connect {
                    path: socket.display().to_string(),
                    source,
                }
            })?;
            client.request_keyed(&req, key.as_deref())
        })
        .await;
        match joined {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(status::from_client(&name, e)),
            Err(e) => Err(Status::internal(format!(
                "appliance {name}: call failed: {e}"
            ))),
        }
    }
}
