//! The floor's raw-IPC variants of the iSCSI steps: the same tgtd requests as the tgtadm
//! floor (what peers run), sent straight on tgtd's management socket with shelf's own
//! encoder over a blocking unix stream. Their rows show what is left of shelfd's cost
//! once no process is started: protocol, dispatch, journal, locks.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;

use shelf::export::tgt::ipc::{decode_reply, TgtReply, TgtRequest};
use shelf::export::tgt::transport::SOCKET_NAMESPACE;

use super::{e, Floor, FLOOR_IQN};
use crate::env::{path_str, Res};

impl Floor {
    /// One request on tgtd's socket, as shelfd's tgt driver sends it.
    fn ipc(&self, req: TgtRequest) -> Res<()> {
        let path = format!("{SOCKET_NAMESPACE}.{}", self.tgtd.control);
        let mut s = UnixStream::connect(&path).map_err(e("connect to tgtd"))?;
        s.write_all(&req.encode()).map_err(e("send to tgtd"))?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).map_err(e("read from tgtd"))?;
        match decode_reply(&reply).map_err(e("tgtd's reply"))? {
            TgtReply::Done(_) => Ok(()),
            TgtReply::Refused(code) => Err(format!(
                "floor: tgtd refused `{}`: {code}",
                req.display(self.tgtd.control)
            )),
        }
    }

    /// [`Floor::create_iscsi`] over the socket.
    pub fn create_iscsi_ipc(&self, name: &str, size: u64) -> Res<u32> {
        self.create_share("default", name, size)?;
        let id = self.id_of(name)?;
        let eid = format!("x-{id}");
        self.insert(&eid, "export", name, "default", 0)?;
        let tid = self.next_tid.fetch_add(1, Ordering::SeqCst);
        let vol = self.volume(name)?;
        shelf::sys::fs::check_backing_store(&vol, &id)
            .map_err(|e| format!("floor: backing store: {e:?}"))?;
        self.new_target_ipc(tid, name, &id)?;
        self.set_state(&eid, "available")?;
        super::stamp_exports(&vol, &super::exports_record(&id, "", None))?;
        self.targets
            .lock()
            .expect("targets")
            .push((tid, name.to_string(), id));
        Ok(tid)
    }

    /// [`Floor::new_target`]'s five requests over the socket.
    fn new_target_ipc(&self, tid: u32, name: &str, share_id: &str) -> Res<()> {
        let vol = self.root.join("shares").join(share_id).join("volume");
        let user = format!("floor-{tid}");
        self.ipc(TgtRequest::new_target(tid, &format!("{FLOOR_IQN}:{name}")))?;
        self.ipc(TgtRequest::new_lun(tid, 1, path_str(&vol)))?;
        self.ipc(TgtRequest::thin_provisioning(tid, 1, true))?;
        self.ipc(TgtRequest::new_account(&user, "floorsecret12345"))?;
        self.ipc(TgtRequest::account_binding(true, tid, &user))
    }

    /// [`Floor::attach_detach`] over the socket: the same steps, the bind and unbind sent
    /// straight to tgtd.
    pub fn attach_detach_ipc(&self, name: &str, tid: u32, initiator: &str) -> Res<()> {
        self.attach_detach_with(name, initiator, &mut |bind| {
            self.ipc(TgtRequest::acl(bind, tid, initiator))
        })
    }
}
