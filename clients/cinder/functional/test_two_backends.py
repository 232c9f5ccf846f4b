"""Two shelf nodes as two Cinder backends (``enabled_backends = small, big``) under one
FilterScheduler: what the scheduler sees is what each node reports, volumes go where
the capacity shelf reports says (CapacityFilter, CapacityWeigher), and a node that is
full is skipped.

The nodes differ in free space: ``small`` is a 2 GiB XFS over-subscribed 1.25 times
with no reserve, ``big`` a 4 GiB XFS over-subscribed twice with 10% reserved (so their
virtual capacities never tie at whole GiB). Cinder's virtual free capacity of a thin backend is
``(total - reserved) * max_over_subscription_ratio - provisioned``; the tests compute it
from each node's own ``pool.show``, never from what Cinder was told.
"""

from __future__ import annotations

import os
from typing import Any, Dict

from shelf_client import NoSpace

from appliance import GiB
from stack import HOST, Backend, ShelfStack


def virtual_free_gib(pool: Dict[str, Any]) -> float:
    """What CapacityWeigher ranks a thin backend by, from shelf's own figures."""
    usable = pool["size"] - pool["size"] * pool["reserved_percentage"] // 100
    return (usable * pool["max_over_subscription_ratio"] - pool["provisioned"]) / GiB


class TwoBackendsTest(ShelfStack):
    BACKENDS = (("small", 2, 1.25, 0), ("big", 4, 2.0, 10))

    def shelf_pool(self, b: Backend) -> Dict[str, Any]:
        with b.node.client() as c:
            return c.pool_show("default")

    def fresh_stats(self) -> Dict[str, Dict[str, Any]]:
        """Run the volume services' stats task and wait until the scheduler holds, for
        every backend, the provisioned figure its node has now."""
        self.report_stats()

        def current() -> Any:
            pools = self.pools()
            for b in self.backends:
                p = pools.get(b.host)
                shelf = round(self.shelf_pool(b)["provisioned"] / GiB, 2)
                if p is None or p["provisioned_capacity_gb"] != shelf:
                    return None
            return pools

        return self.until(current, "stats from both nodes")

    def test_the_scheduler_sees_what_each_node_reports(self) -> None:
        vol = self.create_volume(size=1)
        pools = self.fresh_stats()
        self.assertEqual({f"{HOST}@small#small", f"{HOST}@big#big"}, set(pools))
        for b in self.backends:
            seen, shelf = pools[b.host], self.shelf_pool(b)
            self.assertEqual(round(shelf["size"] / GiB, 2), seen["total_capacity_gb"])
            self.assertAlmostEqual(
                round(shelf["free"] / GiB, 2), seen["free_capacity_gb"], delta=0.05
            )
            self.assertEqual(round(shelf["provisioned"] / GiB, 2), seen["provisioned_capacity_gb"])
            self.assertAlmostEqual(
                round(shelf["allocated"] / GiB, 2), seen["shelf_allocated_capacity_gb"], delta=0.01
            )
            self.assertEqual(
                shelf["max_over_subscription_ratio"], seen["max_over_subscription_ratio"]
            )
            self.assertEqual(shelf["reserved_percentage"], seen["reserved_percentage"])
            self.assertIs(True, seen["thin_provisioning_support"])
            self.assertIs(False, seen["thick_provisioning_support"])
            self.assertIs(True, seen["multiattach"])
            # The scheduler keeps the spellings a volume type may ask for.
            self.assertIn("iSCSI", seen["storage_protocol"])
            self.assertEqual(shelf["shares"], seen["total_volumes"])
            # Cinder's own count of its volumes' sizes on the backend (the volume manager
            # sets it), beside the node's provisioned figure, which counts every share.
            mine = 1 if b.host == vol["os-vol-host-attr:host"] else 0
            self.assertEqual(mine, seen["allocated_capacity_gb"])
        self.assertEqual(2.0, pools[f"{HOST}@big#big"]["max_over_subscription_ratio"])
        self.assertEqual(1.25, pools[f"{HOST}@small#small"]["max_over_subscription_ratio"])
        # discard: what an attach on this node answers.
        node = self.node_of(vol)
        share, connector = self.share_of(vol), {
            "host": "h",
            "initiator": "iqn.1994-05.com.redhat:h",
        }
        with node.node.client() as c:
            c.export_create(share["id"], "iscsi")
            info = c.share_attach(share["id"], connector, protocol="iscsi")["connection_info"]
            c.share_detach(share["id"], connector, protocol="iscsi")
        self.assertIs(info["data"]["discard"], pools[node.host]["discard"])
        self.delete_volume(vol["id"])

    def test_volumes_go_where_shelf_reports_the_most_room(self) -> None:
        """Each volume lands on the backend with the most virtual free capacity by its
        node's pool.show, and on no other node; with these sizes both are chosen."""
        placed = []
        for size in (2, 2, 2, 1):
            self.fresh_stats()
            room = {b.name: virtual_free_gib(self.shelf_pool(b)) for b in self.backends}
            want = max(room, key=room.get)
            vol = self.create_volume(size=size)
            got = self.node_of(vol)
            self.assertEqual(want, got.name, f"{size} GiB with room {room}")
            self.assertEqual(size * GiB, self.share_of(vol)["size"])
            for other in self.backends:
                if other is not got:
                    with other.node.client() as c:
                        names = [s["name"] for s in c.share_list()]
                    self.assertNotIn(f"volume-{vol['id']}", names)
            placed.append(got.name)
        self.assertEqual({"small", "big"}, set(placed), placed)

    def test_a_full_node_is_skipped(self) -> None:
        """With a stacking weigher (fill the fullest backend first) the scheduler would
        pick ``small``; once shelf reports it over-subscribed to its limit (a share made
        on the node, not by Cinder), CapacityFilter drops it and the volume goes to
        ``big``. A volume no node can hold fails with no share anywhere; when the node
        has room again it is chosen again."""
        self.override_config("capacity_weight_multiplier", -1.0)
        small, big = self.backends
        limit = virtual_free_gib(self.shelf_pool(small))
        filler_size = (int(limit * GiB) - GiB // 2) // 4096 * 4096
        with small.node.client() as c:
            filler = c.share_create("not-cinder", filler_size)["share"]
        self.assertLess(virtual_free_gib(self.shelf_pool(small)), 1)
        self.fresh_stats()
        vol = self.create_volume(size=1)
        self.assertEqual("big", self.node_of(vol).name)

        too_big = self.create_volume(
            size=int(virtual_free_gib(self.shelf_pool(big))) + 1, expect="error"
        )
        for b in self.backends:
            with b.node.client() as c:
                names = [s["name"] for s in c.share_list()]
            self.assertNotIn(f"volume-{too_big['id']}", names)
        self.delete_volume(too_big["id"])

        with small.node.client() as c:
            c.share_delete(filler["id"])
        self.fresh_stats()
        again = self.create_volume(size=1)
        self.assertEqual("small", self.node_of(again).name)
        for v in (vol, again):
            self.delete_volume(v["id"])

    def test_a_node_whose_filesystem_is_full_refuses_and_cinder_reschedules(self) -> None:
        """Cinder ranks thin backends by virtual capacity only, so it still picks ``big``
        when something other than shelf has filled big's filesystem down to its reserve.
        shelfd refuses the create (no_space: free at or below the reserve), the driver
        raises, and Cinder's volume manager reschedules the volume to ``small``."""
        small, big = self.backends
        pool = self.shelf_pool(big)
        reserve = pool["size"] * pool["reserved_percentage"] // 100
        filler = big.node.mount / "not-shelf"
        with open(filler, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, pool["free"] - reserve + (64 << 20))
        try:
            self.fresh_stats()
            room = {b.name: virtual_free_gib(self.shelf_pool(b)) for b in self.backends}
            self.assertGreater(room["big"], room["small"], "the weigher's pick is big")
            with big.node.client() as c, self.assertRaises(NoSpace):
                c.share_create("probe", GiB)
            vol = self.create_volume(size=1)
            self.assertEqual("small", self.node_of(vol).name)
            with big.node.client() as c:
                self.assertEqual([], c.share_list())
            self.delete_volume(vol["id"])
        finally:
            filler.unlink()
