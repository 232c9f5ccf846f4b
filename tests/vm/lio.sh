# iSCSI through LIO, sourced by guest.sh (same boot, same shelfd, its helpers
# pass/fail/check/ctl/wait_for and /tmp/a.bin): shelf writes LIO's configfs itself (no
# targetcli). An LVM clone and file-pool shares exported through LIO, `iscsiadm` logins
# reading their data, CHAP with the right and a wrong secret, an ACL and a LUN removed
# behind shelf's back and put back by reconcile, export delete leaving nothing in
# configfs, no process started by shelfd for any LIO change, discard (discard.sh), and the
# time of an export create + delete against the targetcli sequence the old driver ran.
# LIO listens on 0.0.0.0:3260, which tgtd's 127.0.0.1:3260 collides with: tgtd is stopped
# for this part and started again afterwards. See docs/vm-tier.md.

echo "--- iSCSI through LIO, configfs ($(now))"
declare -F lio_discard_thin_lv >/dev/null || . "$S/discard.sh"
LIO_ROOT=/sys/kernel/config/target
[ -s /tmp/a.bin ] || yes A | head -c 1048576 > /tmp/a.bin
tgtadm --op update --mode sys --name State -v offline >/dev/null 2>&1 || true
pkill -9 -x tgtd || true
wait_for sh -c "! pgrep -x tgtd >/dev/null"

# lio_gone IQN ID: configfs holds no object of the export of share ID as target IQN.
lio_gone() {
  local left
  left=$(ls -d "$LIO_ROOT/iscsi/$1" $LIO_ROOT/core/*/"shelf-$2" 2>/dev/null)
  [ -z "$left" ] || { echo "left in configfs: $left"; return 1; }
}
# cminflt: the minor faults of shelfd's reaped children (/proc/PID/stat field 11). Every
# process shelfd starts and waits for adds its page faults there (hundreds for even
# `true`), so an unchanged count means shelfd started no process meanwhile.
cminflt() { awk '{print $11}' "/proc/$SHELFD/stat"; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
# lio_record IQN NAME DIR: the configfs tree of one export (its target, its backstore and
# the attributes shelf reads) as lines `d PATH`, `f PATH<TAB>VALUE`, `l PATH<TAB>TARGET`,
# for the readers' test (src/export/lio/tests.rs); CHAP passwords are not kept.
lio_record() {
  local iqn=$1 name=$2 out=$3 bs d f l a
  mkdir -p "$out"; echo "$iqn" > "$out/iqn.txt"; echo "$name" > "$out/backstore.txt"
  val() { awk 'BEGIN { ORS = "\\n" } 1' "$1"; }
  {
    for bs in $LIO_ROOT/core/*/"$name"; do
      echo "d ${bs#$LIO_ROOT/}"; echo "d ${bs#$LIO_ROOT/}/attrib"
      for f in enable udev_path info attrib/emulate_tpu attrib/emulate_tpws; do
        printf 'f %s\t%s\n' "${bs#$LIO_ROOT/}/$f" "$(val "$bs/$f")"
      done
    done
    find "$LIO_ROOT/iscsi/$iqn" -type d | while read -r d; do echo "d ${d#$LIO_ROOT/}"; done
    find "$LIO_ROOT/iscsi/$iqn" -type l | while read -r l; do
      printf 'l %s\t%s\n' "${l#$LIO_ROOT/}" "$(readlink "$l")"
    done
    d=$LIO_ROOT/iscsi/$iqn/tpgt_1
    for f in enable attrib/generate_node_acls attrib/demo_mode_write_protect attrib/authentication; do
      printf 'f %s\t%s\n' "${d#$LIO_ROOT/}/$f" "$(val "$d/$f")"
    done
    for a in "$d"/acls/*; do
      printf 'f %s\t%s\n' "${a#$LIO_ROOT/}/auth/userid" "$(val "$a/auth/userid")"
      printf 'f %s\t%s\n' "${a#$LIO_ROOT/}/auth/password" "recorded-secret-not-kept"
    done
  } > "$out/tree.txt"
}
# lio_login_compare NAME IQN EXPECTED_FILE: log in (discovery first), compare the disk's
# first MiB with the file, log out.
lio_login_compare() {
  if ! iscsi_login "$2"; then fail "$1" "login to $2 failed"; return; fi
  if cmp -n 1048576 "$3" "/dev/$SDEV"; then pass "$1"; else fail "$1" "data on /dev/$SDEV differs"; fi
  iscsi_logout "$2" || fail "$1-logout" "logout failed"
}
# chap_node IQN KEY VALUE...: set these keys of the initiator's node record of IQN.
chap_node() {
  local iqn=$1 k v
  shift
  while [ $# -gt 0 ]; do
    k=$1 v=$2; shift 2
    iscsiadm -m node -T "$iqn" -p $PORTAL --op update -n "$k" -v "$v" >/dev/null 2>&1 || return 1
  done
}

# Every request's time in shelfd's log (its per-request debug line, "(N ms)"), for the
# timings below; the part's other checks run on this shelfd too.
stop_shelfd; export RUST_LOG=info,shelf::server::conn=debug; start_shelfd; unset RUST_LOG
check lio-hello-usable sh -c "$B/shelfctl --json hello | jq -e '.drivers.lio == \"usable\"'"

# An LVM clone through LIO, read by a real initiator.
L1=$(ctl share create l1 256M --pool thin | jq -r .share.id)
dd if=/tmp/a.bin of=/dev/shelfvg/shelf-$L1 bs=1M count=1 oflag=direct status=none
LSN=$(ctl snapshot create l1 lsnap | jq -r .snapshot.id)
dd if=/dev/zero of=/dev/shelfvg/shelf-$L1 bs=1M count=1 oflag=direct status=none
LC1=$(ctl share clone "$LSN" lc1 | jq -r .share.id)
if LIQN=$(ctl export create lc1 iscsi --pool thin --driver lio --client $INITIATOR --no-chap | jq -r .export.target) \
   && [ -n "$LIQN" ] && [ "$LIQN" != null ]; then
  pass lio-export-create
  check lio-configfs-holds-the-export sh -c "test -L $LIO_ROOT/iscsi/$LIQN/tpgt_1/lun/lun_1/shelf-$LC1 \
    && test -d $LIO_ROOT/iscsi/$LIQN/tpgt_1/np/0.0.0.0:3260 \
    && test -d $LIO_ROOT/iscsi/$LIQN/tpgt_1/acls/$INITIATOR/lun_1 \
    && test \"\$(cat $LIO_ROOT/iscsi/$LIQN/tpgt_1/enable)\" = 1 \
    && test -d $LIO_ROOT/core/iblock_*/shelf-$LC1"
  lio_login_compare lio-iscsiadm-login-reads-lvm-clone "$LIQN" /tmp/a.bin
  # Drift behind shelf's back: the ACL (its mapped LUN first) and the LUN removed, the
  # TPG's authentication attribute changed.
  T=$LIO_ROOT/iscsi/$LIQN/tpgt_1
  find "$T/acls/$INITIATOR/lun_1" -maxdepth 1 -type l -delete \
    && rmdir "$T/acls/$INITIATOR/lun_1" "$T/acls/$INITIATOR" \
    && find "$T/lun/lun_1" -maxdepth 1 -type l -delete && rmdir "$T/lun/lun_1" \
    && echo 1 > "$T/attrib/authentication" || fail lio-drift-made "could not change configfs"
  check lio-verify-sees-removed-acl-and-lun sh -c "$B/shelfctl --json verify | jq -e '.differences | any(.area == \"lio\" and .kind == \"drifted\" and (.detail | test(\"ACL\")))'"
  ctl reconcile > /tmp/lio-reconcile.json 2>&1
  check lio-reconcile-restores-acl-and-lun sh -c "test -d $T/acls/$INITIATOR/lun_1 && test -L $T/lun/lun_1/shelf-$LC1 \
    && test \"\$(cat $T/attrib/authentication)\" = 0"
  lio_login_compare lio-login-after-reconcile "$LIQN" /tmp/a.bin
  echo "--- discard through LIO ($(now))"
  lio_discard_thin_lv lc1 "$LC1" "$LIQN"
  check lio-export-delete ctl export delete lc1 iscsi
  check lio-export-delete-leaves-nothing lio_gone "$LIQN" "$LC1"
else
  fail lio-export-create "$(ctl export create lc1 iscsi --pool thin --driver lio --client $INITIATOR --no-chap 2>&1; tail -5 /tmp/shelfd.log)"
fi

echo "--- LIO with CHAP ($(now))"
LF1=$(ctl share create lf1 64M --pool files | jq -r .share.id)
dd if=/tmp/a.bin of=/srv/files/pool/shares/$LF1/volume bs=1M count=1 conv=notrunc,fsync status=none
faults=$(cminflt)
CIQN=$(ctl export create lf1 iscsi --pool files --driver lio | jq -r .export.target)
info=$(attach_info lf1 files iscsi "$ISCSI_CONNECTOR")
faults_after=$(cminflt)
CUSER=$(echo "$info" | jq -r .connection_info.data.auth_username)
CSECRET=$(echo "$info" | jq -r .connection_info.data.auth_password)
check lio-chap-required sh -c "test \"\$(cat $LIO_ROOT/iscsi/$CIQN/tpgt_1/attrib/authentication)\" = 1 \
  && test \"\$(cat $LIO_ROOT/iscsi/$CIQN/tpgt_1/acls/$INITIATOR/auth/userid)\" = '$CUSER'"
check lio-secret-not-in-log sh -c "! grep -qF -- '$CSECRET' /tmp/shelfd.log"
lio_record "$CIQN" "shelf-$LF1" "$S/fixtures/lio"
iscsiadm -m discovery -t st -p $PORTAL >/dev/null 2>&1
if chap_node "$CIQN" node.session.auth.authmethod CHAP node.session.auth.username "$CUSER" \
     node.session.auth.password "x-wrong-$CSECRET"; then
  if out=$(iscsiadm -m node -T "$CIQN" -p $PORTAL --login 2>&1); then
    fail lio-chap-wrong-secret-refused "logged in: $out"; iscsi_logout "$CIQN"
  else
    check lio-chap-wrong-secret-refused sh -c "! iscsiadm -m session 2>/dev/null | grep -qF '$CIQN'"
  fi
  chap_node "$CIQN" node.session.auth.password "$CSECRET"
  # No discovery here: it would reset the node record's CHAP settings.
  SDEV=
  if iscsiadm -m node -T "$CIQN" -p $PORTAL --login >/dev/null 2>&1 && wait_for iscsi_dev "$CIQN" \
     && SDEV=$(iscsi_dev "$CIQN"); then
    check lio-chap-login-reads-file-share cmp -n 1048576 /tmp/a.bin "/dev/$SDEV"
    iscsi_logout "$CIQN"
  else
    fail lio-chap-login-reads-file-share "login with the right secret failed"
  fi
  iscsiadm -m node -T "$CIQN" -p $PORTAL --op delete >/dev/null 2>&1
else
  fail lio-chap-wrong-secret-refused "iscsiadm could not set CHAP on the node record of $CIQN"
fi
faults_mid=$(cminflt)
detach lf1 files iscsi "$ISCSI_CONNECTOR"
ctl export delete lf1 iscsi >/dev/null
faults_end=$(cminflt)
check lio-export-delete-leaves-nothing-chap lio_gone "$CIQN" "$LF1"
if [ "$faults" = "$faults_after" ] && [ "$faults_mid" = "$faults_end" ]; then
  pass lio-no-process-for-lio-changes
else
  fail lio-no-process-for-lio-changes "shelfd's children's faults went $faults -> $faults_after (export create + attach), $faults_mid -> $faults_end (detach + delete)"
fi
# The probe itself: a request that runs a command (pool.show of an LVM pool runs lvs).
faults=$(cminflt); ctl pool show thin >/dev/null
check lio-fork-probe-sees-a-command test "$(cminflt)" -gt "$faults"

echo "--- LIO export create + delete: configfs against targetcli ($(now))"
for i in 1 2 3; do
  t=$(date +%s%N)
  ctl export create lf1 iscsi --pool files --driver lio --client $INITIATOR --no-chap >/dev/null \
    && ctl export delete lf1 iscsi >/dev/null || fail lio-timing "run $i failed"
  echo "LIO-TIMING configfs export create+delete (shelfctl, run $i): $(ms_since "$t") ms"
done
t=$(date +%s%N); ctl hello >/dev/null; echo "LIO-TIMING shelfctl hello (a round trip): $(ms_since "$t") ms"
grep -E 'export\.(create|delete)' /tmp/shelfd.log | tail -6 | sed 's/^/LIO-TIMING in shelfd: /'
# What the targetcli driver of main ran for the same export (a fileio backstore, target,
# LUN, TPG attributes, portal setting, unmap attributes, one ACL) and its delete, each
# command timed.
TIQN=iqn.2026-11.org.example.timing:old
truncate -s 64M /srv/files/timing.img
tc_total=0
while read -r line; do
  t=$(date +%s%N)
  # shellcheck disable=SC2086
  targetcli $line </dev/null >/dev/null 2>&1 || echo "LIO-TIMING targetcli failed: $line"
  ms=$(ms_since "$t"); tc_total=$((tc_total + ms))
  echo "LIO-TIMING targetcli $ms ms: $line"
done <<TC
/backstores/fileio create name=shelf-timing file_or_dev=/srv/files/timing.img write_back=false
/iscsi create $TIQN
/iscsi/$TIQN/tpg1/luns create /backstores/fileio/shelf-timing lun=1
/iscsi/$TIQN/tpg1 set attribute generate_node_acls=0 demo_mode_write_protect=1 authentication=0
/iscsi/ set global auto_add_default_portal=true
/backstores/fileio/shelf-timing set attribute emulate_tpu=1 emulate_tpws=1
/iscsi/$TIQN/tpg1/acls create $INITIATOR add_mapped_luns=true
/iscsi delete $TIQN
/backstores/fileio delete shelf-timing
TC
echo "LIO-TIMING targetcli export create+delete (9 targetcli runs): $tc_total ms"
rm -f /srv/files/timing.img
ctl share delete lf1 --pool files >/dev/null

lio_discard_files
ctl share delete lc1 --pool thin >/dev/null
ctl snapshot delete "$LSN" >/dev/null
ctl share delete l1 --pool thin >/dev/null

tgtd --iscsi portal=$PORTAL
wait_for tgtadm --op show --mode sys || fail tgtd-restart "did not start again"
ctl reconcile >/dev/null || true
if [ -n "${S1:-}" ]; then
  check tgt-back-after-reconcile sh -c "tgtadm --op show --mode target | grep -q 'Backing store path: /dev/shelfvg/shelf-$S1'"
fi
