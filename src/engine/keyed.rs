//! Idempotency keys: a request carrying a key is done once; a retry with the same key is
//! answered with the first answer, from the database, even across a restart.
//!
//! Kept: successes, and refusals that a retry would get again (`not_found`,
//! `already_exists`, `invalid_argument`, `has_dependents`, `no_space`, `unsupported`).
//! Not kept: `busy` and `internal`, which a retry may well get past. A key reused with
//! another op or other arguments is refused with `invalid_argument`. Keys expire after
//! 24 hours.
//!
//! Secrets stay out of the kept answers (STYLE rule 21): a `share.attach` answer is kept
//! with its CHAP password replaced by null, and a replay puts back the secret of the
//! share's iSCSI export as it is now (absent if that export is gone).

use ciborium::Value;

use super::{map, Engine};
use crate::error::{Error, Result};
use crate::proto::{ErrorCode, Request};
use crate::store::{self, AuditSlot};

/// Encode a result for keeping.
fn encode_result(r: &Result<Value>) -> Vec<u8> {
    let v = match r {
        Ok(v) => map(vec![("ok", v.clone())]),
        Err(e) => map(vec![(
            "error",
            map(vec![
                ("code", Value::Text(e.code().as_str().into())),
                ("message", Value::Text(e.to_string())),
            ]),
        )]),
    };
    let mut out = Vec::new();
    // Encoding into a Vec cannot run out of room.
    let _ = ciborium::into_writer(&v, &mut out);
    out
}

/// A field of a CBOR map, to change in place.
fn field_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    match v {
        Value::Map(entries) => entries
            .iter_mut()
            .find(|(k, _)| k.as_text() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// The `data` map of an answer's `connection_info`.
fn connection_data(v: &mut Value) -> Option<&mut Value> {
    field_mut(field_mut(v, "connection_info")?, "data")
}

/// The CHAP password of an answer's `connection_info`, if it has one.
fn secret_slot(v: &mut Value) -> Option<&mut Value> {
    field_mut(connection_data(v)?, "auth_password")
}

/// The answer as it may be kept: without its secret.
fn without_secret(r: &Result<Value>) -> Result<Value> {
    match r {
        Ok(v) => {
            let mut v = v.clone();
            if let Some(slot) = secret_slot(&mut v) {
                *slot = Value::Null;
            }
            Ok(v)
        }
        Err(e) => Err(Error::from_code(e.code(), e.to_string())),
    }
}

/// The share a kept `connection_info` is for (its `volume_id`), when it had a secret.
fn secret_owner(v: &Value) -> Option<String> {
    let mut copy = v.clone();
    secret_slot(&mut copy)?;
    let data = crate::client::get(crate::client::get(v, "connection_info")?, "data")?;
    crate::client::get_text(data, "volume_id").map(str::to_string)
}

/// Decode a kept result.
fn decode_result(bytes: &[u8]) -> Result<Value> {
    let v: Value = ciborium::from_reader(bytes)
        .map_err(|e| Error::Internal(format!("a kept answer is unreadable: {e}")))?;
    let Value::Map(entries) = v else {
        return Err(Error::Internal("a kept answer is not a map".into()));
    };
    for (k, v) in entries {
        match (k.as_text(), v) {
            (Some("ok"), v) => return Ok(v),
            (Some("error"), Value::Map(e)) => {
                let text = |name: &str| {
                    e.iter()
                        .find(|(k, _)| k.as_text() == Some(name))
                        .and_then(|(_, v)| v.as_text())
                        .unwrap_or_default()
                        .to_string()
                };
                let code = ErrorCode::parse(&text("code")).unwrap_or(ErrorCode::Internal);
                return Err(Error::from_code(code, text("message")));
            }
            _ => {}
        }
    }
    Err(Error::Internal(
        "a kept answer has neither ok nor error".into(),
    ))
}

/// Whether a result is worth keeping for retries.
fn keepable(r: &Result<Value>) -> bool {
    match r {
        Ok(_) => true,
        Err(e) => !matches!(
            e.code(),
            ErrorCode::Busy | ErrorCode::Internal | ErrorCode::Tampered
        ),
    }
}

impl Engine {
    /// Run a request that carries an idempotency key. A retry is answered with the kept
    /// answer of the earlier request: nothing is done now, and no event is published (the
    /// operation, which publishes its outcome's event, does not run).
    pub async fn handle_keyed(
        &self,
        key: &str,
        op: &str,
        digest: &str,
        req: Request,
        slot: &AuditSlot,
    ) -> Result<crate::proto::Body> {
        let _g = self.locks.lock(&format!("key:{key}")).await;
        let answer = match self.kept_answer(key, op, digest).await? {
            Some(answer) => answer,
            None => self.handle_and_keep(key, op, digest, req, slot).await,
        };
        answer.map(crate::proto::Body::Value)
    }

    /// The kept answer for `key`, if the same request was answered before.
    async fn kept_answer(
        &self,
        key: &str,
        op: &str,
        digest: &str,
    ) -> Result<Option<Result<Value>>> {
        let k = key.to_string();
        let kept = self
            .store
            .call(move |c| store::get_keyed_reply(c, &k))
            .await?;
        let Some((kept_op, kept_digest, reply)) = kept else {
            return Ok(None);
        };
        if kept_op != op || kept_digest != digest {
            return Err(Error::Invalid(format!(
                "idempotency key {key:?} was used for another request ({kept_op}); use a new key for a new request"
            )));
        }
        log::debug!("key {key}: answering a retry of {op} with the kept answer");
        Ok(Some(match decode_result(&reply) {
            Ok(v) => Ok(self.with_current_secret(v).await?),
            Err(e) => Err(e),
        }))
    }

    /// Put the CHAP secret back into a kept attach answer: the one of the share's iSCSI
    /// export now (the key is removed if that export is gone).
    async fn with_current_secret(&self, mut v: Value) -> Result<Value> {
        let Some(share) = secret_owner(&v) else {
            return Ok(v);
        };
        let secret = self
            .store
            .call(move |c| store::get_export(c, &share, crate::model::Protocol::Iscsi))
            .await?
            .and_then(|row| row.chap_secret);
        match secret {
            Some(s) => {
                if let Some(slot) = secret_slot(&mut v) {
                    *slot = Value::Text(s);
                }
            }
            None => {
                if let Some(Value::Map(data)) = connection_data(&mut v) {
                    data.retain(|(k, _)| k.as_text() != Some("auth_password"));
                }
            }
        }
        Ok(v)
    }

    /// Run the request and keep its answer under `key` when a retry should get it. A
    /// success whose audit entry the operation did not write has it written with the kept
    /// answer, in one commit.
    async fn handle_and_keep(
        &self,
        key: &str,
        op: &str,
        digest: &str,
        req: Request,
        slot: &AuditSlot,
    ) -> Result<Value> {
        // A change's answer is a value (only list reads are encoded bodies).
        let result = self
            .handle(req, slot)
            .await
            .map(crate::proto::Body::into_value);
        if keepable(&result) {
            let (k, o, d, bytes) = (
                key.to_string(),
                op.to_string(),
                digest.to_string(),
                encode_result(&without_secret(&result)),
            );
            let keep =
                move |c: &rusqlite::Transaction<'_>| store::put_keyed_reply(c, &k, &o, &d, &bytes);
            if result.is_ok() {
                self.store.write_recorded(slot, keep).await?;
            } else {
                self.store.write(keep).await?;
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_results_round_trip() {
        let value = map(vec![("changed", Value::Bool(true))]);
        let ok: Result<Value> = Ok(value.clone());
        assert_eq!(decode_result(&encode_result(&ok)).unwrap(), value);
        let err: Result<Value> = Err(Error::NoSpace("pool p is full".into()));
        let back = decode_result(&encode_result(&err)).unwrap_err();
        assert_eq!(back.code(), ErrorCode::NoSpace);
        assert_eq!(back.to_string(), "pool p is full");
        assert!(!keepable(&Err(Error::Busy("x".into()))));
        let attach = map(vec![(
            "connection_info",
            map(vec![(
                "data",
                map(vec![
                    ("volume_id", Value::Text("s1".into())),
                    ("auth_password", Value::Text("hunter2hunter2".into())),
                ]),
            )]),
        )]);
        let kept = encode_result(&without_secret(&Ok(attach.clone())));
        assert!(!kept.windows(7).any(|w| w == b"hunter2"));
        let back = decode_result(&kept).unwrap();
        assert_eq!(secret_owner(&back).as_deref(), Some("s1"));
        assert_eq!(secret_owner(&value), None);
        assert!(keepable(&Err(Error::NotFound("x".into()))));
    }
}
