# share.revert on the LVM thin pool, sourced by guest.sh (same boot, same shelfd, its helpers
# pass/fail/check/ctl/wait_for/start_shelfd/stop_shelfd): a raw share written through its
# device, snapshot, overwritten, reverted (checksum of the whole device equal to the
# snapshot's); refused `busy` while attached over iSCSI (tgt), accepted with --force (tgt's
# LUN then backs onto the new LV and the old LV is gone); a share grown after its snapshot
# keeps its size; a formatted (xfs) share mounted again with the old file; a crash (debug
# failpoints) after the stage and after the swap, shelfd restarted: old content and new
# content respectively; and the LVs left afterwards exactly the shares' and snapshots'
# (no `-revert` or `-revert-old` leftover). See docs/vm-tier.md.

echo "--- share.revert on the LVM thin pool ($(now))"
RV_CONNECTOR="{\"host\": \"shelfvm\", \"ip\": \"127.0.0.1\", \"initiator\": \"$INITIATOR\"}"
yes RA | head -c 1048576 > /tmp/rv-a.bin; yes RB | head -c 1048576 > /tmp/rv-b.bin
# rv_sum LV: sha256 of the whole thin LV shelfvg/LV.
rv_sum() { sha256sum < "/dev/shelfvg/$1" | cut -d' ' -f1; }
# rv_write LV FILE: FILE's MiB at the start of shelfvg/LV, past the page cache.
rv_write() { dd if="$2" of="/dev/shelfvg/$1" bs=1M count=1 oflag=direct conv=notrunc status=none; }
# rv_no_leftovers: no staged or old revert LV in the VG.
rv_no_leftovers() {
  local left
  left=$(lvs --noheadings -o lv_name shelfvg | tr -d ' ' | grep -e '-revert$' -e '-revert-old$')
  [ -z "$left" ] || { echo "left over: $left"; return 1; }
}
# rv_refused_busy NAME OUT: OUT is a refusal with code busy.
rv_refused_busy() { echo "$2" | grep -q busy && pass "$1" || fail "$1" "$2"; }

RV1=$(ctl share create rv-raw 64M --pool thin | jq -r .share.id)
RVL=shelf-$RV1
rv_write "$RVL" /tmp/rv-a.bin
RV_SNAP_SUM=$(rv_sum "$RVL")
RVS1=$(ctl snapshot create rv-raw rv-snap | jq -r .snapshot.id)
rv_write "$RVL" /tmp/rv-b.bin
check revert-lvm-raw-overwritten test "$(rv_sum "$RVL")" != "$RV_SNAP_SUM"
check revert-lvm-raw-accepted ctl share revert rv-raw rv-snap --pool thin
check revert-lvm-raw-checksum-is-snapshots test "$(rv_sum "$RVL")" = "$RV_SNAP_SUM"
check revert-lvm-raw-no-leftovers rv_no_leftovers
check revert-lvm-raw-tags-carry-name sh -c "lvs --noheadings -o lv_tags shelfvg/$RVL | grep -q shelf.name.0.rrv-raw"
check revert-lvm-raw-verify-clean sh -c "$B/shelfctl --json verify | jq -e .clean"

echo "--- revert while attached ($(now))"
rv_write "$RVL" /tmp/rv-b.bin
if out=$(ctl call share.attach "{\"share\": \"rv-raw\", \"pool\": \"thin\", \"protocol\": \"iscsi\", \"connector\": $RV_CONNECTOR}" 2>&1); then
  pass revert-lvm-attach
  out=$($B/shelfctl share revert rv-raw rv-snap --pool thin 2>&1) \
    && fail revert-lvm-refused-busy-while-attached "accepted: $out" \
    || rv_refused_busy revert-lvm-refused-busy-while-attached "$out"
  check revert-lvm-refused-leaves-content cmp -n 1048576 /tmp/rv-b.bin "/dev/shelfvg/$RVL"
  check revert-lvm-force-accepted ctl share revert rv-raw rv-snap --pool thin --force
  check revert-lvm-force-checksum-is-snapshots test "$(rv_sum "$RVL")" = "$RV_SNAP_SUM"
  check revert-lvm-force-tgt-backs-new-lv sh -c "tgtadm --op show --mode target | grep -q 'Backing store path: /dev/shelfvg/$RVL\$'"
  check revert-lvm-force-old-lv-removed rv_no_leftovers
  ctl call share.detach "{\"share\": \"rv-raw\", \"pool\": \"thin\", \"protocol\": \"iscsi\", \"connector\": $RV_CONNECTOR}" >/dev/null 2>&1 \
    || fail revert-lvm-detach "detach failed"
else
  fail revert-lvm-attach "$out"
fi

echo "--- revert of a share grown after its snapshot ($(now))"
RVG=$(ctl share create rv-grow 32M --pool thin | jq -r .share.id)
rv_write "shelf-$RVG" /tmp/rv-a.bin
ctl snapshot create rv-grow rv-gsnap >/dev/null
ctl share resize rv-grow 64M >/dev/null
rv_write "shelf-$RVG" /tmp/rv-b.bin
check revert-lvm-grown-accepted ctl share revert rv-grow rv-gsnap --pool thin
check revert-lvm-grown-keeps-size test "$(blockdev --getsize64 /dev/shelfvg/shelf-$RVG)" = 67108864
check revert-lvm-grown-tags-keep-size sh -c "lvs --noheadings -o lv_tags shelfvg/shelf-$RVG | grep -q shelf.size.0.r67108864"
check revert-lvm-grown-content cmp -n 1048576 /tmp/rv-a.bin "/dev/shelfvg/shelf-$RVG"
check revert-lvm-grown-share-shows-size sh -c "$B/shelfctl --json share show rv-grow --pool thin | jq -e '.size == 67108864'"

echo "--- revert of a formatted (xfs) share ($(now))"
RVF=$(ctl share create rv-fs 320M --pool thin --filesystem xfs | jq -r .share.id)
RVMP=/var/lib/shelf/mounts/$RVF
echo "before the snapshot" > "$RVMP/file.txt"; sync
ctl snapshot create rv-fs rv-fsnap >/dev/null
echo "after the snapshot" > "$RVMP/file.txt"; touch "$RVMP/new.txt"; sync
check revert-lvm-fs-accepted ctl share revert rv-fs rv-fsnap --pool thin
check revert-lvm-fs-mounted-again mountpoint -q "$RVMP"
check revert-lvm-fs-old-file grep -qx "before the snapshot" "$RVMP/file.txt"
check revert-lvm-fs-later-file-gone test ! -e "$RVMP/new.txt"
check revert-lvm-fs-mount-is-share-lv sh -c "test \"\$(stat -L -c %t:%T /dev/shelfvg/shelf-$RVF)\" = \"\$(mountpoint -d $RVMP | awk -F: '{printf \"%x:%x\", \$1, \$2}')\""
check revert-lvm-fs-no-leftovers rv_no_leftovers

# rv_crash POINT: restart shelfd armed with failpoint POINT, revert rv-raw (shelfd aborts
# there), then start shelfd unarmed (its start-up recovery replays the intent).
rv_crash() {
  stop_shelfd
  SHELF_FAILPOINT=$1 "$B/shelfd" --config /etc/shelf/shelf.toml >> /tmp/shelfd.log 2>&1 &
  SHELFD=$!
  wait_for ctl hello || { fail "revert-lvm-crash-$1" "armed shelfd did not start"; return 1; }
  $B/shelfctl share revert rv-raw rv-snap --pool thin >/dev/null 2>&1
  wait "$SHELFD"
  start_shelfd
}
echo "--- crash after the stage ($(now))"
rv_write "$RVL" /tmp/rv-b.bin
RV_NEW_SUM=$(rv_sum "$RVL")
if rv_crash share.revert.after_stage; then
  check revert-lvm-crash-after-stage-old-content test "$(rv_sum "$RVL")" = "$RV_NEW_SUM"
  check revert-lvm-crash-after-stage-no-leftovers rv_no_leftovers
  check revert-lvm-crash-after-stage-logged grep -q "revert of share rv-raw .* undone" /tmp/shelfd.log
fi
echo "--- crash after the swap ($(now))"
if rv_crash share.revert.after_swap; then
  check revert-lvm-crash-after-swap-new-content test "$(rv_sum "$RVL")" = "$RV_SNAP_SUM"
  check revert-lvm-crash-after-swap-no-leftovers rv_no_leftovers
  check revert-lvm-crash-after-swap-logged grep -q "revert of share rv-raw .* finished" /tmp/shelfd.log
fi
check revert-lvm-verify-clean-after-crashes sh -c "$B/shelfctl --json verify | jq -e .clean"

# Exactly the LVs expected: the three shares and their three snapshots (other parts' LVs
# are told apart by the names this part made).
RV_LVS=$(lvs --noheadings -o lv_name,lv_tags shelfvg | grep -e shelf.name.0.rrv- | awk '{print $1}' | sort)
RV_WANT=$(ctl snapshot list | jq -r '.[] | select(.name | startswith("rv-")) | "shelf-snap-" + .id' ;
  for id in "$RV1" "$RVG" "$RVF"; do echo "shelf-$id"; done)
check revert-lvm-exactly-the-expected-lvs test "$RV_LVS" = "$(echo "$RV_WANT" | sort)"
lvs -o lv_name,lv_attr,lv_size,origin shelfvg
ctl share delete rv-fs --pool thin --recursive --force >/dev/null 2>&1
ctl share delete rv-grow --pool thin --recursive --force >/dev/null 2>&1
ctl share delete rv-raw --pool thin --recursive --force >/dev/null 2>&1
