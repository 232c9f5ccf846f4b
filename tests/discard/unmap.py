#!/usr/bin/python3
"""Send one raw SCSI UNMAP to LUN 1 of a target through libiscsi's own library (ctypes
over libiscsi.so.7, the library iscsi-test-cu uses), whether or not the LUN advertises
logical block provisioning: qemu-io sends UNMAP only to a LUN that does, so it cannot
show that a LUN refuses one.

    unmap.py PORTAL IQN USER INITIATOR LBA BLOCKS

The CHAP secret comes from LIBISCSI_CHAP_PASSWORD (never argv). Prints one line,
``status=<SCSI status> error=<libiscsi's message>``; exits 0 when the command reached the
target and was answered (whatever the answer), 1 when it could not be sent.
"""

import ctypes
import os
import sys

ISCSI_SESSION_NORMAL = 2
ISCSI_HEADER_DIGEST_NONE = 0


class UnmapList(ctypes.Structure):
    """libiscsi's ``struct unmap_list``: one range of logical blocks."""

    _fields_ = [("lba", ctypes.c_uint64), ("num", ctypes.c_uint32)]


def main() -> int:
    portal, iqn, user, initiator, lba, blocks = sys.argv[1:7]
    lib = ctypes.CDLL("libiscsi.so.7")
    lib.iscsi_create_context.restype = ctypes.c_void_p
    lib.iscsi_create_context.argtypes = [ctypes.c_char_p]
    lib.iscsi_get_error.restype = ctypes.c_char_p
    lib.iscsi_get_error.argtypes = [ctypes.c_void_p]
    lib.iscsi_unmap_sync.restype = ctypes.c_void_p
    lib.iscsi_unmap_sync.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(UnmapList),
        ctypes.c_int,
    ]
    for name in (
        "iscsi_set_targetname",
        "iscsi_set_session_type",
        "iscsi_set_header_digest",
        "iscsi_set_initiator_username_pwd",
        "iscsi_full_connect_sync",
    ):
        getattr(lib, name).argtypes = None
    ctx = lib.iscsi_create_context(initiator.encode())
    password = os.environ["LIBISCSI_CHAP_PASSWORD"].encode()
    steps = [
        lib.iscsi_set_targetname(ctypes.c_void_p(ctx), iqn.encode()),
        lib.iscsi_set_session_type(ctypes.c_void_p(ctx), ISCSI_SESSION_NORMAL),
        lib.iscsi_set_header_digest(ctypes.c_void_p(ctx), ISCSI_HEADER_DIGEST_NONE),
        lib.iscsi_set_initiator_username_pwd(ctypes.c_void_p(ctx), user.encode(), password),
        lib.iscsi_full_connect_sync(ctypes.c_void_p(ctx), portal.encode(), 1),
    ]
    if any(rc != 0 for rc in steps):
        print(f"login failed: {lib.iscsi_get_error(ctx).decode()}")
        return 1
    ranges = (UnmapList * 1)(UnmapList(int(lba), int(blocks)))
    task = lib.iscsi_unmap_sync(ctx, 1, 0, 0, ranges, 1)
    if not task:
        print(f"not sent: {lib.iscsi_get_error(ctx).decode()}")
        return 1
    # ``status`` is the first member of ``struct scsi_task``.
    status = ctypes.cast(task, ctypes.POINTER(ctypes.c_int))[0]
    print(f"status={status} error={lib.iscsi_get_error(ctx).decode()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
