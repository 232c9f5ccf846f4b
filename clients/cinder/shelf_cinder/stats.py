"""What ``get_volume_stats`` tells Cinder's scheduler: a shelf pool's own figures.

The backend is one shelf pool (no ``pools`` list; Cinder names the pool after
``volume_backend_name``). Capacity is ``pool.show`` converted to GiB; the capacity
policy is the pool's (shelfd enforces ``reserved_percentage`` and
``max_over_subscription_ratio`` itself, so the scheduler is told the figures the node
will apply). See docs/cinder.md, "Capacity reporting", for what each key means to
Cinder's CapacityFilter and CapacityWeigher.
"""

from __future__ import annotations

import uuid
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

#: Bytes in one Cinder gigabyte (Cinder sizes are GiB).
GiB = 1 << 30
#: The first field of a shelf backend's ``location_info`` (Cinder's convention, as the
#: LVM driver's ``LVMVolumeDriver:<host>:<vg>:...``: the driver family, then where).
LOCATION_TAG = "ShelfDriver"


def location_info(node: str, pool: str, node_id: Optional[str]) -> str:
    """``location_info``: ``ShelfDriver:<node>:<pool>:<node-id>``, where ``node`` names
    the shelf node (``shelf_node_name``), ``pool`` the pool holding the backend's volumes
    and ``node-id`` is the shelf node's id (``hello``'s ``node.id``). A source driver
    reads it in ``migrate_volume`` (:mod:`shelf_cinder.migration`). Without a node id (a
    shelfd before node ids) it is the old ``ShelfDriver:<node>:<pool>``, which other
    shelf backends then decline to migrate to."""
    if node_id is None:
        return f"{LOCATION_TAG}:{node}:{pool}"
    return f"{LOCATION_TAG}:{node}:{pool}:{node_id}"


def is_node_id(text: Any) -> bool:
    """A shelf node id: a UUID, lowercase and hyphenated (as shelfd writes it)."""
    try:
        return isinstance(text, str) and str(uuid.UUID(text)) == text
    except ValueError:
        return False


def node_id_of(hello: Any) -> Optional[str]:
    """The node id in a ``hello`` reply; ``None`` from a shelfd without node ids (or
    anything that is not a node id)."""
    node = hello.get("node") if isinstance(hello, Mapping) else None
    node_id = node.get("id") if isinstance(node, Mapping) else None
    return node_id if is_node_id(node_id) else None


def parse_location_info(info: Any) -> Optional[Tuple[str, str, Optional[str]]]:
    """``(node, pool, node_id)`` of a shelf backend's ``location_info``; ``node_id`` is
    ``None`` in the old three-field form (a driver before node ids). ``None`` for
    anything else (another driver's, a malformed one): that destination is not shelf."""
    if not isinstance(info, str):
        return None
    parts = info.split(":")
    if parts[0] != LOCATION_TAG or len(parts) not in (3, 4) or not all(parts[1:]):
        return None
    if len(parts) == 3:
        return parts[1], parts[2], None
    if not is_node_id(parts[3]):
        return None
    return parts[1], parts[2], parts[3]


def gib(size_bytes: int) -> float:
    """Bytes to GiB, two decimals, as Cinder's capacity fields are reported."""
    return round(size_bytes / GiB, 2)


def discards(
    pool: Mapping[str, Any],
    shelf_protocol: str,
    export_drivers: Iterable[str],
    discarding: Mapping[str, Iterable[str]],
) -> bool:
    """Whether this backend's volumes are attached with ``discard: true``.

    shelfd says it itself: ``pool.show``'s ``discard`` map (docs/protocol.md 8.15) is,
    per block protocol, what an attach of a thin volume (every Cinder volume is a
    sparse share) of the pool answers in ``connection_info.data.discard``, from the
    protocol's configured default driver, the one the attach uses. A protocol it leaves
    out (NFS) does not discard.

    An older shelfd leaves the map out; then the answer is judged from ``discarding``
    (driver → pool kinds it unmaps on): every export driver for the protocol that is
    usable now must unmap in a pool of this kind, and there must be one, so a node where
    a driver that does not unmap could serve the volume says ``false`` rather than
    promise what an attach may not keep."""
    said = pool.get("discard")
    if isinstance(said, Mapping):
        return bool(said.get(shelf_protocol, False))
    drivers, kind = pool.get("drivers", {}), pool.get("kind")
    usable = [d for d in export_drivers if drivers.get(d) == "usable"]
    return bool(usable) and all(kind in discarding.get(d, ()) for d in usable)


def volume_stats(driver: Any, pool: Dict[str, Any]) -> Dict[str, Any]:
    """The stats of ``driver``'s backend from its pool's ``pool.show`` reply."""
    backend = driver.configuration.safe_get("volume_backend_name") or type(driver).__name__
    stats = {
        "volume_backend_name": backend,
        "vendor_name": driver.VENDOR,
        "driver_version": driver.VERSION,
        "storage_protocol": driver.PROTOCOL,
        "total_capacity_gb": gib(pool["size"]),
        "free_capacity_gb": gib(pool["free"]),
        # Cinder's meaning: the sizes of every volume on the backend, Cinder's or not.
        "provisioned_capacity_gb": gib(pool["provisioned"]),
        "reserved_percentage": pool["reserved_percentage"],
        "max_over_subscription_ratio": pool["max_over_subscription_ratio"],
        "thin_provisioning_support": True,
        "thick_provisioning_support": False,
        "multiattach": True,
        "discard": discards(
            pool, driver.SHELF_PROTOCOL, driver.EXPORT_DRIVERS, driver.DISCARDING_DRIVERS
        ),
        "QoS_support": False,
        "total_volumes": pool["shares"],
        "sparse_copy_volume": True,
        "location_info": location_info(driver.node_name(), pool["name"], driver.node_id()),
    }
    # What the volumes really take on the node. Not ``allocated_capacity_gb``: Cinder's
    # volume manager overwrites that key with its own sum of its volumes' sizes.
    if "allocated" in pool:
        stats["shelf_allocated_capacity_gb"] = gib(pool["allocated"])
    return stats
