"""The per-backend discard capability (shelf_cinder.stats.discards). A shelfd that
reports it (pool.show's ``discard`` map) is believed; its value on a real node, against
a real attach's connection_info, is checked in test_volumes.py. The fallback for an older
shelfd (no map) is a pure function of pool.show's ``kind`` and ``drivers``; these are the
cases this machine cannot make: an LVM pool (no LVM tools here) and a node where LIO is
usable beside tgt (no targetcli)."""

from shelf_cinder.driver import ShelfISCSIDriver, ShelfNFSDriver, ShelfNVMeTCPDriver
from shelf_cinder.stats import discards


def says(cls, kind, discard=None, **drivers):
    pool = {"kind": kind, "drivers": dict(drivers)}
    if discard is not None:
        pool["discard"] = discard
    return discards(pool, cls.SHELF_PROTOCOL, cls.EXPORT_DRIVERS, cls.DISCARDING_DRIVERS)


def test_shelfds_own_answer_wins_over_the_table():
    # The table would say true (tgt on a file pool) and false (nvmet); shelfd says which.
    said = {"iscsi": False, "nvme": True}
    assert says(ShelfISCSIDriver, "file", said, tgt="usable") is False
    assert says(ShelfNVMeTCPDriver, "file", said, nvmet="usable") is True
    assert says(ShelfNFSDriver, "file", said, kernel="usable") is False


# An older shelfd: no ``discard`` in pool.show, so the table judges.


def test_tgt_on_a_file_pool_discards():
    assert says(ShelfISCSIDriver, "file", tgt="usable", lio="targetcli missing") is True


def test_tgt_on_lvm_thin_does_not():
    assert says(ShelfISCSIDriver, "lvm", tgt="usable") is False


def test_a_usable_driver_that_may_not_unmap_makes_it_false():
    assert says(ShelfISCSIDriver, "file", tgt="usable", lio="usable") is False


def test_no_usable_driver_is_false():
    assert says(ShelfISCSIDriver, "file", tgt="tgtd is not running") is False


def test_nfs_and_nvme_say_false():
    assert says(ShelfNFSDriver, "file", kernel="usable", ganesha="usable") is False
    assert says(ShelfNVMeTCPDriver, "file", nvmet="usable") is False
