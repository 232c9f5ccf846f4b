"""What ``get_volume_stats`` tells Cinder's scheduler: a shelf pool's own figures.

The backend is one shelf pool (no ``pools`` list; Cinder names the pool after
``volume_backend_name``). Capacity is ``pool.show`` converted to GiB; the capacity
policy is the pool's (shelfd enforces ``reserved_percentage`` and
``max_over_subscription_ratio`` itself, so the scheduler is told the figures the node
will apply). See docs/cinder.md, "Capacity reporting", for what each key means to
Cinder's CapacityFilter and CapacityWeigher.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping

#: Bytes in one Cinder gigabyte (Cinder sizes are GiB).
GiB = 1 << 30


def gib(size_bytes: int) -> float:
    """Bytes to GiB, two decimals, as Cinder's capacity fields are reported."""
    return round(size_bytes / GiB, 2)


def discards(
    pool: Mapping[str, Any], export_drivers: Iterable[str], discarding: Mapping[str, Iterable[str]]
) -> bool:
    """Whether this backend's volumes are attached with ``discard: true``: every shelf
    export driver for the protocol that is usable now unmaps for a sparse volume (all
    Cinder volumes are sparse shares) in a pool of this kind (``discarding``: driver →
    pool kinds), and there is one. shelf's connection_info says it per attach
    (``data.discard``, docs/exports.md "Discard"); the scheduler needs it per backend, so
    a node where a driver that does not unmap could serve the volume says ``false``
    rather than promise what an attach may not keep."""
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
        "discard": discards(pool, driver.EXPORT_DRIVERS, driver.DISCARDING_DRIVERS),
        "QoS_support": False,
        "total_volumes": pool["shares"],
        "sparse_copy_volume": True,
        "location_info": f"{type(driver).__name__}:{driver.host}:{pool['name']}",
    }
    # What the volumes really take on the node. Not ``allocated_capacity_gb``: Cinder's
    # volume manager overwrites that key with its own sum of its volumes' sizes.
    if "allocated" in pool:
        stats["shelf_allocated_capacity_gb"] = gib(pool["allocated"])
    return stats
