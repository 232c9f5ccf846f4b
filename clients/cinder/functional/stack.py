"""Cinder's own in-process stack over real shelf nodes.

:class:`ShelfStack` is Cinder's functional test base
(``cinder.tests.functional.functional_helpers._FunctionalTestBase``, from the ``cinder``
package on PyPI): the real REST API (``osapi_volume`` WSGI service on 127.0.0.1, from
the ``api-paste.ini`` pip installs into the venv's ``etc/cinder``), the real
``FilterScheduler`` with its default filters and weighers, and real volume managers,
over a fresh sqlite database and oslo.messaging's in-process ``fake`` transport. What
differs from Cinder's own functional tests: one volume service per entry of
``enabled_backends`` (as ``cinder-volume`` starts them, host ``<host>@<backend>``), each
running the shelf iSCSI driver against its own real shelf node (tests/appliance.py: a
scratch XFS of its own size, a private tgtd, a real shelfd).

Cinder's test base monkey-patches the process with eventlet (cinder.tests.unit), so these
tests run in their own pytest process (clients/cinder/run-functional), never beside
tests/.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple
from unittest import mock

from oslo_config import cfg
from oslo_service import wsgi

from cinder import service
from cinder.tests.functional import functional_helpers
from cinder.tests.functional.api import client as api_client
from cinder.tests.unit import test as cinder_test
from cinder.volume import driver as cinder_driver
from cinder.volume import manager as volume_manager

from appliance import HANG, Appliance
from shelf_cinder.base import shelf_opts

CONF = cfg.CONF
#: The host part of every volume service (``<HOST>@<backend>``).
HOST = "shelf-func"
#: pip puts Cinder's data files (etc/cinder/api-paste.ini) under the venv's prefix.
FILTERS = [
    "AvailabilityZoneFilter",
    "CapacityFilter",
    "CapabilitiesFilter",
    "IgnoreAttemptedHostsFilter",
]
API_PASTE = Path(sys.prefix) / "etc" / "cinder" / "api-paste.ini"


class Backend:
    """One ``enabled_backends`` entry: its name (the cinder.conf section) and the shelf
    node behind it."""

    def __init__(self, name: str, size_gib: int, over_subscription: float, reserved: int) -> None:
        self.name = name
        self.node = Appliance(
            size_gib=size_gib, reserved_percentage=reserved, over_subscription=over_subscription
        )

    @property
    def host(self) -> str:
        """The volume service's host, as volumes' ``os-vol-host-attr:host`` names it
        (``host@backend#pool``; the pool is the backend name: the driver reports no
        ``pools`` list)."""
        return f"{HOST}@{self.name}#{self.name}"


class ShelfStack(functional_helpers._FunctionalTestBase):
    """Cinder's API, scheduler and one volume service per backend over shelf nodes.

    Subclasses set ``BACKENDS``: ``(name, XFS size in GiB, max_over_subscription_ratio,
    reserved_percentage)``.
    The nodes start once per class (setUpClass) and stop in a class cleanup, also when
    a test or the start fails; Cinder's services and database are new for every test,
    and every share a test leaves on a node is deleted after it.
    """

    BACKENDS: Tuple[Tuple[str, int, float, int], ...] = ()
    # Attachments (3.27), os-complete (3.44), attach mode (3.54).
    _osapi_version = "3.54"
    backends: List[Backend] = []
    # The API's list filters, also among the venv's data files (the base looks in the
    # source tree's etc/).
    RESOURCE_FILTER_PATH = str(API_PASTE.with_name("resource_filters.json"))

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.backends = [Backend(*b) for b in cls.BACKENDS]
        for b in cls.backends:
            cls.addClassCleanup(cls._stop_node, b.node)
            b.node.start()

    @staticmethod
    def _stop_node(node: Appliance) -> None:
        print(f"--- shelfd log ({node.base}) ---\n{node.log_text()[-4000:]}")
        node.stop()

    def _get_flags(self) -> Dict[str, Dict[str, Any]]:
        f = super()._get_flags()
        f["enabled_backends"] = {"v": [b.name for b in self.backends]}
        # Cinder's default filters, and the one docs/cinder.md adds for many nodes: a
        # volume a node refused is rescheduled to another node, not to the same one.
        CONF.import_opt("scheduler_default_filters", "cinder.scheduler.host_manager")
        f["scheduler_default_filters"] = {"v": FILTERS}
        return f

    def _backend_options(self, b: Backend) -> None:
        """The backend's cinder.conf section: the shelf driver and its node's socket."""
        # cinder-volume registers these when it builds the backend's Configuration; the
        # overrides need them first.
        for opts in (volume_manager.volume_backend_opts, cinder_driver.volume_opts, shelf_opts):
            CONF.register_opts(opts, group=b.name)
        section = {
            "volume_driver": "shelf_cinder.driver.ShelfISCSIDriver",
            "volume_backend_name": b.name,
            "shelf_socket": b.node.socket,
            "shelf_timeout": HANG,
        }
        for name, value in section.items():
            self.override_config(name, value, b.name)

    def setUp(self) -> None:
        # _FunctionalTestBase.setUp starts one volume service without a backend; this is
        # the same with one service per backend, as cinder-volume does for
        # enabled_backends (cinder/cmd/volume.py).
        cinder_test.TestCase.setUp(self)
        for name, value in self._get_flags().items():
            self.override_config(name, value["v"], value.get("g"))
        for b in self.backends:
            self._backend_options(b)
        self.addCleanup(self._empty_nodes)
        self.volumes = {
            b.name: self.start_service("volume", host=f"{HOST}@{b.name}", service_name=b.name)
            for b in self.backends
        }
        with mock.patch("eventlet.sleep"):
            self.scheduler = self.start_service("scheduler")
        self._start_api_service()
        self.addCleanup(self.osapi.stop)
        self.api = api_client.TestOpenStackClient(
            "fake-user", "fake-project", self.auth_url, self._osapi_version
        )
        self.until(lambda: len(self.pools()) == len(self.backends), "every backend's stats")

    def _start_api_service(self) -> None:
        assert API_PASTE.is_file(), f"{API_PASTE} missing: is the cinder package installed?"
        wsgi.register_opts(CONF)  # WSGIService does it too, after reading the option
        self.override_config("api_paste_config", str(API_PASTE))
        self.osapi = service.WSGIService("osapi_volume")
        self.osapi.start()
        self.auth_url = f"http://{self.osapi.host}:{self.osapi.port}/v3"

    def _common_cleanup(self) -> None:
        # Cinder's cleanup deletes every public instance attribute, among them the test
        # method pytest's unittest runner set on the instance and deletes itself after.
        keep = {k: v for k, v in self.__dict__.items() if k == self._testMethodName}
        super()._common_cleanup()
        self.__dict__.update(keep)

    def _empty_nodes(self) -> None:
        """Delete what a test left on the nodes (its volumes, also after a failure)."""
        for b in self.backends:
            with b.node.client() as c:
                for share in c.share_list():
                    c.share_delete(share["id"], recursive=True, force=True)

    # ------------------------------------------------------------ helpers

    def until(self, ready: Callable[[], Any], what: str) -> Any:
        """Poll ``ready`` (green sleeps, so Cinder's services run meanwhile) until it
        answers something true; fail after HANG seconds."""
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline:
            got = ready()
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError(f"no {what} within {HANG} s")

    def settled(self, get: Callable[[], Dict[str, Any]], busy: Tuple[str, ...]) -> Dict:
        """The resource ``get`` answers once its status is no longer one of ``busy``."""

        def done() -> Optional[Dict[str, Any]]:
            got = get()
            return got if got["status"] not in busy else None

        return self.until(done, "end of " + "/".join(busy))

    def volume(self, volume_id: str) -> Dict[str, Any]:
        return self.api.get_volume(volume_id)

    def create_volume(self, expect: str = "available", **body: Any) -> Dict[str, Any]:
        """POST /volumes and wait until it is no longer ``creating``."""
        vid = self.api.post_volume({"volume": body})["id"]
        vol = self.settled(lambda: self.volume(vid), ("creating", "downloading"))
        self.assertEqual(expect, vol["status"], vol)
        return vol

    def delete_volume(self, volume_id: str) -> None:
        self.api.delete_volume(volume_id)
        self.until(lambda: self._gone(self.api.get_volume, volume_id), f"volume {volume_id} gone")

    @staticmethod
    def _gone(get: Callable[[str], Any], rid: str) -> bool:
        try:
            got = get(rid)
        except api_client.OpenStackApiException404:
            return True
        assert got["status"] != "error_deleting", got
        return False

    def pools(self) -> Dict[str, Dict[str, Any]]:
        """What the scheduler knows of each pool (its capabilities, by pool name
        ``host@backend#pool``): the scheduler manager's ``get_pools``, which
        ``GET /scheduler-stats/get_pools?detail=True`` calls over RPC. Called directly:
        oslo.messaging's in-process fake transport hands the API the scheduler's
        ReadOnlyDicts unserialised, and the API's view (``.copy()``) fails on them."""
        ctx = cinder_test.context.get_admin_context()
        pools = self.scheduler.manager.get_pools(ctx, filters=None)
        return {p["name"]: dict(p["capabilities"]) for p in pools}

    def report_stats(self) -> None:
        """Run every volume service's stats task (the periodic
        ``publish_service_capabilities``: get_volume_stats, then the capabilities are
        sent to the scheduler) now instead of waiting for its interval."""
        ctx = cinder_test.context.get_admin_context()
        for svc in self.volumes.values():
            svc.manager.publish_service_capabilities(ctx)

    def node_of(self, vol: Dict[str, Any]) -> Backend:
        host = vol["os-vol-host-attr:host"]
        return next(b for b in self.backends if b.host == host)

    def share_of(self, vol: Dict[str, Any], node: Optional[Appliance] = None) -> Dict:
        """The shelf share of a Cinder volume, from the node the volume is placed on."""
        node = node or self.node_of(vol).node
        with node.client() as c:
            return c.share_show(f"volume-{vol['id']}", pool="default")
