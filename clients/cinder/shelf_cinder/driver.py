"""Cinder volume drivers for the shelf storage appliance, as cinder.conf names them:

    volume_driver = shelf_cinder.driver.ShelfISCSIDriver
    volume_driver = shelf_cinder.driver.ShelfNFSDriver
    volume_driver = shelf_cinder.driver.ShelfNVMeTCPDriver

All keep every Cinder volume as one shelf share (see :mod:`shelf_cinder.base`); they
differ only in how the share is exported and attached. docs/cinder.md has the options
and the full mapping of Cinder calls to shelf operations.
"""

from __future__ import annotations

from typing import Any, Dict

from cinder import exception, interface

from shelf_cinder.base import GiB, ShelfBaseDriver, shelf_opts

__all__ = [
    "GiB",
    "ShelfBaseDriver",
    "ShelfISCSIDriver",
    "ShelfNFSDriver",
    "ShelfNVMeTCPDriver",
    "shelf_opts",
]


@interface.volumedriver
class ShelfISCSIDriver(ShelfBaseDriver):
    """Cinder volumes as shelf shares, attached over iSCSI (tgt or LIO) with a CHAP
    account per target; ``initialize_connection`` adds the connector's initiator to
    the target's ACL."""

    PROTOCOL = "iSCSI"
    SHELF_PROTOCOL = "iscsi"
    EXPORT_DRIVERS = ("tgt", "lio")
    # tgt: LUNs of sparse volume files have thin_provisioning=1 (UNMAP punches holes); not
    # on LVM thin LVs (tgtd's punch becomes WRITE ZEROES, which frees no dm-thin block).
    DISCARDING_DRIVERS = {"tgt": ("file",)}

    def _check_connector(self, connector: Dict[str, Any]) -> None:
        if not connector.get("initiator"):
            raise exception.InvalidConnectorException(missing="initiator")


@interface.volumedriver
class ShelfNFSDriver(ShelfBaseDriver):
    """Cinder volumes as shelf shares, each its own NFS export holding one file,
    ``volume`` (seed 003's layout); ``initialize_connection`` adds the connector's IP
    to the export's clients and answers ``{"export": "host:/path", "name": "volume"}``
    for Nova's NFS volume driver. Exports are made without root squash: the volume
    file is root's, mode 0660, and Nova opens it as root."""

    PROTOCOL = "nfs"
    SHELF_PROTOCOL = "nfs"
    EXPORT_DRIVERS = ("kernel", "ganesha")

    def _export_options(self) -> Dict[str, Any]:
        # clients=[]: only attached hosts may mount (shelf never exports to the world).
        return {"clients": [], "root_squash": False}

    def _check_connector(self, connector: Dict[str, Any]) -> None:
        if not connector.get("ip") and not connector.get("host"):
            raise exception.InvalidConnectorException(missing="ip")


@interface.volumedriver
class ShelfNVMeTCPDriver(ShelfBaseDriver):
    """Cinder volumes as shelf shares, attached over NVMe/TCP (shelf's ``nvmet``
    driver: one subsystem per share, namespace 1 the volume). ``initialize_connection``
    passes the connector's host NQN (os-brick reports it as ``nqn``), which shelfd adds to
    the subsystem's allowed hosts, and answers the connection_info os-brick's
    NVMeOFConnector reads: ``driver_volume_type: "nvmeof"`` with ``target_nqn``,
    ``portals`` as ``[[address, port, "tcp"]]``, ``vol_uuid`` and ``host_nqn``."""

    #: cinder.common.constants.NVMEOF, as Cinder's own NVMe-oF targets report it.
    PROTOCOL = "NVMe-oF"
    SHELF_PROTOCOL = "nvme"
    EXPORT_DRIVERS = ("nvmet",)
    CONNECTOR_FIELDS = ("ip", "nqn")

    def _check_connector(self, connector: Dict[str, Any]) -> None:
        if not connector.get("nqn"):
            raise exception.InvalidConnectorException(missing="nqn")
