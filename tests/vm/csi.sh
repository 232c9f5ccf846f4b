# The CSI part of the VM tier, sourced by guest.sh (same boot, same shelfd; its helpers
# pass/fail/wait_for): shelf-csi serves both services, as on a one-machine cluster; its
# controller talks to this shelfd as appliance vm1, its node service attaches this guest.
# The orchestrator is the VM test binary itself (bin/vm-tier), running its ignored test
# csi::csi_co_in_guest (tests/vm/csi/), which prints its own PASS/FAIL lines. See
# docs/vm-tier.md.

echo "--- CSI: shelf-csi driven by the orchestrator in tests/vm/csi/ ($(now))"
# A Kubernetes node runs udev, and the node service finds an iSCSI LUN by its
# /dev/disk/by-path link (udev's 60-persistent-storage.rules): udevd runs for this part
# only (LVM in this guest makes its own device nodes, lvmlocal.conf, so nothing before
# needed it).
/lib/systemd/systemd-udevd --daemon --resolve-names=never \
  && udevadm trigger --action=add --subsystem-match=block && udevadm settle --timeout=30 \
  || fail csi-udevd "systemd-udevd did not start"
CSI_SOCKET=/run/shelf-csi/csi.sock
mkdir -p /etc/shelf-csi /var/lib/shelf-csi
cat > /etc/shelf-csi/config.toml <<TOML
[[appliance]]
name = "vm1"
socket = "$SHELF_SOCKET"
pool = "thin"
[node]
name = "shelfvm"
ip = "127.0.0.1"
state_dir = "/var/lib/shelf-csi"
TOML
"$B/shelf-csi" --mode all --config /etc/shelf-csi/config.toml --endpoint "unix://$CSI_SOCKET" \
  > /tmp/shelf-csi.log 2>&1 &
CSI_PID=$!
if wait_for test -S "$CSI_SOCKET"; then
  SHELF_VM_CSI_SOCKET=$CSI_SOCKET SHELF_VM_T0=$T0 timeout 900 "$B/vm-tier" --exact csi::csi_co_in_guest \
    --ignored --nocapture --test-threads=1 || fail csi-orchestrator "exit status $?"
else
  fail csi-start "$(tail -20 /tmp/shelf-csi.log)"
fi
kill -TERM "$CSI_PID" 2>/dev/null; wait "$CSI_PID"
iscsiadm -m session 2>/dev/null | sed 's/^/left after CSI: /'
udevadm control --exit 2>/dev/null
echo "--- shelf-csi log"; tail -40 /tmp/shelf-csi.log

