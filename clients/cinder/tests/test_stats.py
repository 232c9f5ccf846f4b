"""The per-backend discard capability (shelf_cinder.stats.discards), a pure function of
pool.show's ``kind`` and ``drivers``; its value on a real node, against a real attach, is
checked in test_volumes.py. These are the cases this machine cannot make: an LVM pool
(no LVM tools here) and a node where LIO is usable beside tgt (no targetcli)."""

from shelf_cinder.driver import ShelfISCSIDriver, ShelfNFSDriver, ShelfNVMeTCPDriver
from shelf_cinder.stats import discards


def says(cls, kind, **drivers):
    pool = {"kind": kind, "drivers": dict(drivers)}
    return discards(pool, cls.EXPORT_DRIVERS, cls.DISCARDING_DRIVERS)


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
