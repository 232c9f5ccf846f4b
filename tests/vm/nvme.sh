# NVMe over TCP through shelf's nvmet driver, sourced by guest.sh (same boot, same shelfd,
# its helpers pass/fail/check/ctl/wait_for and /tmp/a.bin, /tmp/b.bin): an LVM share and
# a file share exported as subsystems, `nvme connect` as an attached host and as one that
# is not, detach, a wiped nvmet configuration brought back by reconcile, resize seen by
# the initiator, and os-brick's NVMeOFConnector connecting as Nova does. See
# docs/vm-tier.md. The guest's host NQN is the image's /etc/nvme/hostnqn (os-brick reads
# the same file).

echo "--- NVMe/TCP through nvmet ($(now))"
HOSTNQN=$(cat /etc/nvme/hostnqn)
OTHERNQN=nqn.2026-11.org.example.shelfvm:not-attached
NVMET=/sys/kernel/config/nvmet
CONNECTOR="{\"host\": \"shelfvm\", \"ip\": \"127.0.0.1\", \"nqn\": \"$HOSTNQN\"}"

# nvme_dev SUBNQN: the namespace block device of the connected subsystem SUBNQN (the
# multipath head nvmeXnY, or the controller's namespace without native multipath).
nvme_dev() {
  local s d b
  for s in /sys/class/nvme-subsystem/*; do
    [ "$(cat "$s/subsysnqn" 2>/dev/null)" = "$1" ] || continue
    for d in "$s"/nvme*n* "$s"/nvme*/nvme*n*; do
      b=$(basename "$d")
      case "$b" in nvme*c*n*) continue ;; esac
      [ -b "/dev/$b" ] && { echo "/dev/$b"; return 0; }
    done
  done
  return 1
}
# nvme_connect SUBNQN HOSTNQN: nvme-cli's connect over TCP to shelf's portal; a controller
# whose reconnects fail is given up after 3 s (the default is 600 s).
nvme_connect() {
  timeout 60 nvme connect -t tcp -a 127.0.0.1 -s "$NVME_PORT" -n "$1" --hostnqn "$2" \
    --ctrl-loss-tmo 3 --reconnect-delay 1 2>&1
}
# nvme_gone SUBNQN: no controller of SUBNQN is left on the initiator.
nvme_gone() { ! grep -qx "$1" /sys/class/nvme-subsystem/*/subsysnqn 2>/dev/null; }
nvme_disconnect() { timeout 60 nvme disconnect -n "$1" >/dev/null 2>&1; wait_for nvme_gone "$1"; }
# connect_and_compare NAME SUBNQN EXPECTED_FILE: connect as HOSTNQN, compare the first MiB
# of the namespace with the file; leaves the connection up and its device in $NDEV.
connect_and_compare() {
  local n=$1 nqn=$2 want=$3 out
  NDEV=
  if ! out=$(nvme_connect "$nqn" "$HOSTNQN"); then fail "$n" "connect: $out"; return 1; fi
  wait_for nvme_dev "$nqn"
  if ! NDEV=$(nvme_dev "$nqn"); then fail "$n" "no namespace device after connect: $out"; return 1; fi
  if cmp -n 1048576 "$want" "$NDEV"; then pass "$n"; else fail "$n" "data on $NDEV differs"; fi
}
# host_ctrl SUBNQN HOSTNQN: a controller of SUBNQN connected as HOSTNQN exists.
host_ctrl() {
  local c
  for c in /sys/class/nvme/nvme*; do
    [ "$(cat "$c/subsysnqn" 2>/dev/null)" = "$1" ] && [ "$(cat "$c/hostnqn" 2>/dev/null)" = "$2" ] \
      && return 0
  done
  return 1
}
# refused NAME SUBNQN HOSTNQN: nvme connect as HOSTNQN must fail and leave no controller
# of that host (another host's may be connected meanwhile).
refused() {
  local out
  if out=$(nvme_connect "$2" "$3"); then
    fail "$1" "connect as $3 was accepted: $out"; nvme_disconnect "$2"
  elif host_ctrl "$2" "$3"; then
    fail "$1" "a controller of $2 as $3 exists after a refused connect"
  else
    pass "$1"
  fi
}
# direct_read FILE: the first MiB of FILE (a device or the volume file), past any cache.
direct_read() { dd if="$1" bs=1M count=1 iflag=direct status=none; }
# nvmet_wipe: what a reboot (or a modprobe -r) does to nvmet: every port link, allowed
# host, namespace, subsystem, port and host gone; then the modules are reloaded empty.
nvmet_wipe() {
  local x
  for x in $NVMET/ports/*/subsystems/* $NVMET/subsystems/*/allowed_hosts/*; do
    [ -L "$x" ] && rm -f "$x"
  done
  for x in $NVMET/subsystems/*/namespaces/*; do
    [ -d "$x" ] && { echo 0 > "$x/enable"; rmdir "$x"; }
  done
  for x in $NVMET/subsystems/* $NVMET/ports/* $NVMET/hosts/*; do [ -d "$x" ] && rmdir "$x"; done
  modprobe -r nvmet-tcp nvmet && modprobe nvmet && modprobe nvmet-tcp
}

check nvmet-hello-usable sh -c "$B/shelfctl --json hello | jq -e '.drivers.nvmet == \"usable\"'"

# An LVM share: its LV's first MiB is a.bin before it is exported.
N1=$(ctl share create n1 64M --pool thin | jq -r .share.id)
NLV=/dev/shelfvg/shelf-$N1
dd if=/tmp/a.bin of="$NLV" bs=1M count=1 oflag=direct status=none
if out=$(ctl call export.create '{"share": "n1", "pool": "thin", "protocol": "nvme"}' 2>&1); then
  NQN1=$(echo "$out" | jq -r .export.target)
  pass nvme-lvm-export-create
else
  NQN1=$NVME_PREFIX:n1
  fail nvme-lvm-export-create "$out $(tail -5 /tmp/shelfd.log)"
fi
check nvme-subsystem-in-configfs sh -c "test \"\$(cat $NVMET/subsystems/$NQN1/attr_allow_any_host)\" = 0 \
  && test \"\$(cat $NVMET/subsystems/$NQN1/namespaces/1/device_path)\" = $NLV \
  && test -L $NVMET/ports/*/subsystems/$NQN1"
# No host attached yet: the export alone lets nobody in.
refused nvme-unattached-export-refuses "$NQN1" "$HOSTNQN"

INFO=$(ctl call share.attach "{\"share\": \"n1\", \"pool\": \"thin\", \"protocol\": \"nvme\", \"connector\": $CONNECTOR}" 2>&1)
# os-brick's NVMeOFConnector shape: portals as [address, port, transport].
nvmeof_info() {
  echo "$INFO" | jq -e --arg nqn "$NQN1" --arg host "$HOSTNQN" --arg port "$NVME_PORT" '
    .connection_info.driver_volume_type == "nvmeof"
    and .connection_info.data.target_nqn == $nqn
    and .connection_info.data.portals == [["127.0.0.1", $port, "tcp"]]
    and .connection_info.data.host_nqn == $host
    and (.connection_info.data.vol_uuid | test("^[0-9a-f-]{36}$"))'
}
check nvme-attach-returns-nvmeof nvmeof_info
check nvme-host-in-allowed-hosts test -L "$NVMET/subsystems/$NQN1/allowed_hosts/$HOSTNQN"

if connect_and_compare nvme-connect-reads-lvm-share "$NQN1" /tmp/a.bin; then
  dd if=/tmp/b.bin of="$NDEV" bs=1M count=1 oflag=direct status=none
  check nvme-write-reaches-lvm-share sh -c "dd if=$NLV bs=1M count=1 iflag=direct status=none | cmp -n 1048576 /tmp/b.bin -"
  # Deallocate (discard.sh's helpers): the thin LV's data falls.
  check nvme-thin-lv-connection-info-discard info_discard "$INFO" true
  check nvme-thin-lv-initiator-discards queue_discards "${NDEV#/dev/}"
  write_then_discard nvme-thin-lv "$NDEV" lv_data "shelf-$N1" 16
  check nvme-namespace-uuid-is-vol-uuid test "$(cat "/sys/block/${NDEV#/dev/}/uuid")" = "$(echo "$INFO" | jq -r .connection_info.data.vol_uuid)"
  ctl share resize n1 128M >/dev/null
  # The namespace's new size reaches the host by nvmet's namespace-changed event; a
  # rescan of the controller makes sure.
  for c in /sys/class/nvme-subsystem/*/nvme*; do
    [[ $(basename "$c") =~ ^nvme[0-9]+$ ]] && [ "$(cat "$(dirname "$c")/subsysnqn")" = "$NQN1" ] \
      && nvme ns-rescan "/dev/$(basename "$c")" >/dev/null 2>&1
  done
  if wait_for sh -c "test \"\$(blockdev --getsize64 $NDEV)\" = 134217728"; then
    pass nvme-resize-reaches-namespace
  else
    fail nvme-resize-reaches-namespace "$NDEV is $(blockdev --getsize64 "$NDEV") bytes after resize to 128M"
  fi
fi
refused nvme-other-host-refused "$NQN1" "$OTHERNQN"

# Detach while the host is connected: nvmet only checks allowed_hosts at connect, so
# shelf drops the subsystem's controllers (port unlink and relink); this host's
# reconnects are then refused and its controller goes away.
ctl call share.detach "{\"share\": \"n1\", \"pool\": \"thin\", \"protocol\": \"nvme\", \"connector\": $CONNECTOR}" >/dev/null
if [ -n "${NDEV:-}" ]; then
  gone=1
  for _ in $(seq 1 150); do nvme_gone "$NQN1" && { gone=0; break; }; sleep 0.2; done
  if [ $gone = 0 ]; then pass nvme-detach-drops-live-connection
  else fail nvme-detach-drops-live-connection "the controller of $NQN1 is still there 30 s after detach"; nvme_disconnect "$NQN1"; fi
fi
refused nvme-detach-revokes "$NQN1" "$HOSTNQN"

# A wiped nvmet (what a reboot leaves: nothing) comes back through reconcile, with the
# attached host's access.
ctl call share.attach "{\"share\": \"n1\", \"pool\": \"thin\", \"protocol\": \"nvme\", \"connector\": $CONNECTOR}" >/dev/null
nvmet_wipe
check nvmet-wiped sh -c "! ls $NVMET/subsystems/ | grep -q ."
check nvme-verify-sees-wiped-subsystem sh -c "! $B/shelfctl verify >/dev/null 2>&1"
ctl reconcile >/dev/null || true
check nvme-reconcile-restores-subsystem test -L "$NVMET/subsystems/$NQN1/allowed_hosts/$HOSTNQN"
if connect_and_compare nvme-reads-after-reconcile "$NQN1" /tmp/b.bin; then
  nvme_disconnect "$NQN1"
fi
check nvme-verify-clean-after-reconcile sh -c "$B/shelfctl --json verify | jq -e .clean"

echo "--- os-brick's NVMeOFConnector, as Nova uses it ($(now))"
# Nova's sequence: get_connector_properties on the compute host; Cinder's
# initialize_connection (here: share.attach with the connector's host, ip and nqn, the
# fields Cinder's shelf driver passes); connect_volume(connection_info['data']) returns the
# device; disconnect_volume at detach. os-brick's privileged calls go through its privsep
# daemon (privsep-helper from the venv: the guest runs as root, no sudo/rootwrap). The
# script is tests/vm/osbrick.py.
if out=$(timeout 300 /opt/os-brick/bin/python "$S/osbrick.py" "$B/shelfctl" n1 thin /tmp/b.bin 2>&1); then
  echo "$out" | grep -E '^(connector|device|data|discard|disconnected)'
  check osbrick-connector-reports-nqn grep -q "^connector .*\"nqn\": \"$HOSTNQN\"" <<< "$out"
  check osbrick-connect-volume-reads-share grep -qx 'data same' <<< "$out"
  check osbrick-connection-info-discard grep -qx 'discard true' <<< "$out"
  if grep -qx disconnected <<< "$out" && nvme_gone "$NQN1"; then pass osbrick-disconnect-volume
  else fail osbrick-disconnect-volume "$out"; fi
else
  fail osbrick-connect-volume-reads-share "$(echo "$out" | tail -30)"
fi
ctl call share.detach "{\"share\": \"n1\", \"pool\": \"thin\", \"protocol\": \"nvme\", \"connector\": $CONNECTOR}" >/dev/null
ctl call export.delete '{"share": "n1", "pool": "thin", "protocol": "nvme"}' >/dev/null
check nvme-export-delete-removes-subsystem sh -c "! test -e $NVMET/subsystems/$NQN1"
ctl share delete n1 --pool thin >/dev/null

echo "--- NVMe/TCP of a file-pool share ($(now))"
NF1=$(ctl share create nf1 64M --pool files | jq -r .share.id)
NFILE=/srv/files/pool/shares/$NF1/volume
dd if=/tmp/a.bin of="$NFILE" bs=1M count=1 conv=notrunc,fsync status=none
NQN2=$(ctl call export.create '{"share": "nf1", "pool": "files", "protocol": "nvme"}' | jq -r .export.target)
check nvme-file-namespace-is-volume-file sh -c "test \"\$(cat $NVMET/subsystems/$NQN2/namespaces/1/device_path)\" = $NFILE"
INFO2=$(attach_info nf1 files nvme "$CONNECTOR")
check nvme-file-connection-info-discard info_discard "$INFO2" true
if connect_and_compare nvme-connect-reads-file-share "$NQN2" /tmp/a.bin; then
  dd if=/tmp/b.bin of="$NDEV" bs=1M count=1 oflag=direct status=none
  # nvmet punches a hole in the volume file where the host deallocates.
  write_then_discard nvme-file "$NDEV" blocks "$NFILE" 8
  nvme_disconnect "$NQN2"
  check nvme-write-reaches-file-share sh -c "dd if=$NFILE bs=1M count=1 iflag=direct status=none | cmp -n 1048576 /tmp/b.bin -"
fi
ctl call share.detach "{\"share\": \"nf1\", \"pool\": \"files\", \"protocol\": \"nvme\", \"connector\": $CONNECTOR}" >/dev/null
refused nvme-file-detach-revokes "$NQN2" "$HOSTNQN"
ctl share delete nf1 --pool files --recursive --force >/dev/null
check nvme-share-delete-removes-subsystem sh -c "! test -e $NVMET/subsystems/$NQN2"

# A preallocated file share: nvmet deallocates on every file-backed namespace and cannot
# be told to refuse (a run before the refusal saw a host's 8 MiB deallocate take a 32 MiB
# preallocated file from 65,544 to 49,160 blocks), so shelf refuses its NVMe export, by
# export.create and by an attach that would make one, before configfs is touched
# (docs/exports.md, "Discard").
# unsupported OP ARGS: `shelfctl call OP ARGS` is refused with code unsupported, naming
# nvmet's deallocate (shelfctl prints "shelfctl: OP: unsupported: why" on stderr, nothing
# on stdout, and exits 1).
unsupported() {
  local out rc=0
  out=$(ctl call "$1" "$2" 2>&1) || rc=$?
  if [ "$rc" = 1 ] && grep -q "^shelfctl: $1: unsupported: .*nvmet deallocates" <<< "$out"; then
    return 0
  fi
  echo "exit $rc: $out"
  return 1
}
NP1=$(ctl share create np1 32M --pool files --preallocate | jq -r .share.id)
SUBS_BEFORE=$(ls "$NVMET/subsystems/")
check nvme-preallocated-export-refused unsupported export.create \
  '{"share": "np1", "pool": "files", "protocol": "nvme"}'
check nvme-preallocated-attach-refused unsupported share.attach \
  "{\"share\": \"np1\", \"pool\": \"files\", \"protocol\": \"nvme\", \"connector\": $CONNECTOR}"
check nvme-preallocated-no-subsystem sh -c "test \"\$(ls $NVMET/subsystems/)\" = \"$SUBS_BEFORE\" \
  && ! ls $NVMET/subsystems/ | grep -q -e np1 -e $NP1"
ctl share delete np1 --pool files --recursive --force >/dev/null
