//! The only code that touches the operating system: the command runner, file-system calls
//! (reflink, fallocate, xattrs, statvfs), the state-dir lock, peer credentials, and one
//! request-reply exchange on a daemon's unix socket (tgtd's management socket).

pub mod block;
pub mod cmd;
pub mod configfs;
pub mod exchange;
pub mod fiemap;
pub mod fs;
pub mod landlock;
pub mod process;
pub mod programs;
pub mod qemu_img;
pub mod systemd;
pub mod users;
