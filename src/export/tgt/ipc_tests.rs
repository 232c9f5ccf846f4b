//! The encoder and decoder against exchanges recorded between tgtadm and the tgtd
//! installed here (`tests/fixtures/tgt-ipc/`, made by its `record.py`).

use super::*;
use crate::export::tgt::{parse_show_accounts, parse_show_target};

/// Control port the recordings were made through (the relay's).
const RELAY: u32 = 31338;
const IQN: &str = "iqn.2026-11.org.example.shelf:vol1";
const INIT: &str = "iqn.2026-11.org.example:client1";
const VOL: &str = "/tmp/tgt-ipc/volume";

/// One recorded exchange: tgtadm's argv, exit status and stderr, and the bytes.
struct Exchange {
    argv: Vec<String>,
    exit: i32,
    stderr: String,
    request: Vec<u8>,
    reply: Vec<u8>,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn load(text: &str) -> Exchange {
    let mut x = Exchange {
        argv: Vec::new(),
        exit: -1,
        stderr: String::new(),
        request: Vec::new(),
        reply: Vec::new(),
    };
    for line in text.lines() {
        if let Some(a) = line.strip_prefix("# ") {
            x.argv = a.split(' ').map(str::to_string).collect();
        } else if let Some(e) = line.strip_prefix("exit: ") {
            x.exit = e.parse().unwrap();
        } else if let Some(e) = line.strip_prefix("stderr: ") {
            x.stderr.push_str(e);
            x.stderr.push('\n');
        } else if let Some(h) = line.strip_prefix("> ") {
            x.request.extend(hex(h));
        } else if let Some(h) = line.strip_prefix("< ") {
            x.reply.extend(hex(h));
        }
    }
    x
}

macro_rules! fixture {
    ($name:literal) => {
        load(include_str!(concat!(
            "../../../tests/fixtures/tgt-ipc/",
            $name,
            ".exchange"
        )))
    };
}

/// Every recorded exchange with the request the driver builds for it.
fn recorded() -> Vec<(Exchange, TgtRequest)> {
    let (u, s) = ("shelf-u1", "fixture-secret-0001");
    vec![
        (fixture!("01-system-show"), TgtRequest::show_system()),
        (fixture!("02-target-new"), TgtRequest::new_target(1, IQN)),
        (
            fixture!("03-target-new-again"),
            TgtRequest::new_target(1, IQN),
        ),
        (fixture!("04-lun-new"), TgtRequest::new_lun(1, 1, VOL)),
        (
            fixture!("05-lun-update-thin"),
            TgtRequest::thin_provisioning(1, 1, true),
        ),
        (fixture!("06-account-new"), TgtRequest::new_account(u, s)),
        (
            fixture!("07-account-new-again"),
            TgtRequest::new_account(u, s),
        ),
        (
            fixture!("08-account-bind"),
            TgtRequest::account_binding(true, 1, u),
        ),
        (fixture!("09-bind-name"), TgtRequest::acl(true, 1, INIT)),
        (
            fixture!("10-bind-address"),
            TgtRequest::acl(true, 1, "192.0.2.1"),
        ),
        (
            fixture!("11-bind-name-again"),
            TgtRequest::acl(true, 1, INIT),
        ),
        (fixture!("12-target-show"), TgtRequest::show_targets()),
        (fixture!("13-account-show"), TgtRequest::show_accounts()),
        (fixture!("14-unbind-name"), TgtRequest::acl(false, 1, INIT)),
        (
            fixture!("15-unbind-name-again"),
            TgtRequest::acl(false, 1, INIT),
        ),
        (
            fixture!("16-account-unbind"),
            TgtRequest::account_binding(false, 1, u),
        ),
        (fixture!("17-lun-delete"), TgtRequest::delete_lun(1, 1)),
        (fixture!("18-target-delete"), TgtRequest::delete_target(1)),
        (
            fixture!("19-target-delete-again"),
            TgtRequest::delete_target(1),
        ),
        (fixture!("20-account-delete"), TgtRequest::delete_account(u)),
        (
            fixture!("21-account-delete-again"),
            TgtRequest::delete_account(u),
        ),
    ]
}

#[test]
fn every_request_is_the_bytes_and_the_command_line_tgtadm_used() {
    for (x, req) in recorded() {
        req.check().unwrap();
        assert_eq!(req.encode(), x.request, "bytes of {:?}", x.argv);
        let cmd = req.tgtadm_cmd(RELAY);
        let mut argv = vec!["tgtadm".to_string()];
        argv.extend(cmd.argv().iter().cloned());
        assert_eq!(argv, x.argv);
    }
}

#[test]
fn every_reply_decodes_to_what_tgtadm_made_of_it() {
    for (x, _) in recorded() {
        let reply = decode_reply(&x.reply).unwrap();
        match reply {
            TgtReply::Done(_) => assert_eq!(x.exit, 0, "{:?}", x.argv),
            TgtReply::Refused(code) => {
                // tgtadm exits EINVAL and prints the same reason: the fallback reads it
                // back to the same code.
                assert_eq!(x.exit, 22, "{:?}", x.argv);
                assert_eq!(TgtCode::from_tgtadm_stderr(&x.stderr), Some(code));
                assert_eq!(x.stderr.trim(), format!("tgtadm: {}", code.message()));
            }
        }
    }
}

#[test]
fn refusals_carry_their_codes() {
    let code = |x: Exchange| match decode_reply(&x.reply).unwrap() {
        TgtReply::Refused(c) => c,
        other => panic!("{other:?}"),
    };
    assert_eq!(code(fixture!("03-target-new-again")), TgtCode::TARGET_EXIST);
    assert_eq!(code(fixture!("07-account-new-again")), TgtCode::USER_EXIST);
    assert_eq!(code(fixture!("11-bind-name-again")), TgtCode::ACL_EXIST);
    assert_eq!(code(fixture!("15-unbind-name-again")), TgtCode::ACL_NOEXIST);
    assert_eq!(code(fixture!("19-target-delete-again")), TgtCode::NO_TARGET);
    assert_eq!(code(fixture!("21-account-delete-again")), TgtCode::NO_USER);
}

#[test]
fn shows_decode_to_the_text_the_parsers_read() {
    let text = |x: Exchange| match decode_reply(&x.reply).unwrap() {
        TgtReply::Done(t) => t,
        other => panic!("{other:?}"),
    };
    let system = text(fixture!("01-system-show"));
    assert!(is_system_show(&system), "{system}");
    let targets = parse_show_target(&text(fixture!("12-target-show")));
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].tid, 1);
    assert_eq!(targets[0].iqn, IQN);
    assert_eq!(targets[0].luns.get(&1).map(String::as_str), Some(VOL));
    assert!(targets[0].accounts.contains("shelf-u1"));
    assert!(targets[0].acl.contains(INIT) && targets[0].acl.contains("192.0.2.1"));
    assert_eq!(
        parse_show_accounts(&text(fixture!("13-account-show"))),
        ["shelf-u1"]
    );
    assert!(!is_system_show(&text(fixture!("12-target-show"))));
}

#[test]
fn malformed_replies_are_errors_not_guesses() {
    let good = fixture!("13-account-show").reply;
    assert!(decode_reply(&good[..5]).unwrap_err().contains("shorter"));
    // Cut short, or with bytes after the announced length.
    assert!(decode_reply(&good[..good.len() - 3])
        .unwrap_err()
        .contains("announces"));
    let mut long = good.clone();
    long.push(b'x');
    assert!(decode_reply(&long).unwrap_err().contains("announces"));
    // Text without its NUL.
    let mut unterminated = good.clone();
    *unterminated.last_mut().unwrap() = b'\n';
    assert!(decode_reply(&unterminated).unwrap_err().contains("NUL"));
    // An error with text is not tgt 1.0's answer.
    let mut odd = good.clone();
    odd[0] = 4;
    assert!(decode_reply(&odd).unwrap_err().contains("error 4"));
    // A bare success.
    assert_eq!(
        decode_reply(&fixture!("02-target-new").reply),
        Ok(TgtReply::Done(String::new()))
    );
}

#[test]
fn what_tgtd_would_misread_is_refused_before_sending() {
    assert!(TgtRequest::new_lun(1, 1, "/a,b").check().is_err());
    assert!(TgtRequest::new_target(1, "iqn.x\0:y").check().is_err());
    assert!(TgtRequest::new_account("u", "p\0q").check().is_err());
    // A secret may hold commas: tgtd takes it to the end of the text.
    TgtRequest::new_account("u", "a,b=c").check().unwrap();
    // tgtd finds fields with strstr("key="): an `=` in an earlier value would be read
    // as a field of its own (here an address ACL inside an initiator name), and a line
    // break would land in `show`'s text, which reconcile parses by line.
    let forged = "iqn.2026-11.org.example:x,initiator-address=ALL";
    assert!(TgtRequest::acl(true, 1, "iqn.x:initiator-address=ALL")
        .check()
        .is_err());
    assert!(TgtRequest::acl(true, 1, forged).check().is_err());
    assert!(TgtRequest::new_lun(1, 1, "/pool/user=x").check().is_err());
    assert!(TgtRequest::new_account("u=v", "p").check().is_err());
    assert!(TgtRequest::new_target(1, "iqn.x:y\nTarget 9: z")
        .check()
        .is_err());
    assert!(TgtRequest::acl(true, 1, "10.0.0.1\r").check().is_err());
    // The last free-text field may: the secret, and `--params` (ours: key=value).
    TgtRequest::new_account("u", "a=b").check().unwrap();
    TgtRequest::thin_provisioning(1, 1, true).check().unwrap();
    let long = "/".repeat(MAX_PARAMS);
    assert!(TgtRequest::new_lun(1, 1, &long).check().is_err());
}

#[test]
fn thin_provisioning_off_is_the_same_update_with_zero() {
    let on = TgtRequest::thin_provisioning(7, 1, true).encode();
    let off = TgtRequest::thin_provisioning(7, 1, false).encode();
    assert_eq!(on.len(), off.len());
    assert!(off.ends_with(b"targetOps thin_provisioning=0,\0"));
    let argv = TgtRequest::thin_provisioning(7, 1, false).tgtadm_cmd(0);
    assert_eq!(argv.argv().last().unwrap(), "thin_provisioning=0");
}

#[test]
fn the_secret_is_never_shown() {
    let r = TgtRequest::new_account("shelf-u1", "hunter2-secret");
    assert!(!format!("{r:?}").contains("hunter2"));
    let shown = r.display(5);
    assert!(
        shown.contains("<redacted>") && !shown.contains("hunter2"),
        "{shown}"
    );
}

#[test]
fn unknown_codes_and_tgtadm_complaints() {
    assert_eq!(TgtCode(99).message(), "(unknown tgtadm_errno)");
    assert_eq!(TgtCode::from_tgtadm_stderr("tgtadm: success\n"), None);
    assert_eq!(
        TgtCode::from_tgtadm_stderr("tgtadm: unknown mode: x\n"),
        None,
        "tgtadm's own complaints are not tgtd's refusals"
    );
}
