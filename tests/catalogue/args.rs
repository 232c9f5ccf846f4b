//! Cases about operation arguments: names, sizes, metadata and types.

use ciborium::Value;

use super::*;

const MIB: u64 = 1 << 20;

fn create(name: Value, size: Value) -> Vec<(&'static str, Value)> {
    vec![("name", name), ("size", size)]
}

fn names() -> Vec<Case> {
    let mut cases = Vec::new();
    for (tag, name, says) in [
        ("slash", "/", "must start with a letter or digit"),
        ("embedded-slash", "a/b", "contains '/'"),
        ("dotdot", "..", "must start with a letter or digit"),
        ("dotdot-path", "../etc", "must start with a letter or digit"),
        ("nul", "a\0b", "contains '\\0'"),
        ("newline", "a\nb", "contains '\\n'"),
        ("escape-sequence", "a\x1b[31mred", "contains '\\u{1b}'"),
        ("space", "a b", "contains ' '"),
        ("empty", "", "must not be empty"),
        (
            "non-ascii",
            "\u{e9}t\u{e9}",
            "must start with a letter or digit",
        ),
        ("rtl-override", "a\u{202e}b", "contains '\\u{202e}'"),
    ] {
        cases.push(engine_err(
            &format!("name-{tag}"),
            "share.create",
            create(t(name), n(8 * MIB)),
            "invalid_argument",
            &["share name", says],
        ));
    }
    cases.push(engine_err(
        "name-10000-chars",
        "share.create",
        create(t(&"n".repeat(10_000)), n(8 * MIB)),
        "invalid_argument",
        &["10000 bytes long", "at most 63"],
    ));
    let near_max = MAX_FRAME as usize - 200;
    cases.push(engine_err(
        "name-just-under-1mib",
        "share.create",
        create(t(&"m".repeat(near_max)), n(8 * MIB)),
        "invalid_argument",
        &["bytes long", "at most 63"],
    ));
    cases.push(case(
        "name-1mib-frame-too-large",
        frame_of(&req(
            1,
            "share.create",
            create(t(&"m".repeat(MAX_FRAME as usize)), n(512)),
        )),
        Stage::Header,
        err(
            None,
            "invalid_argument",
            &["larger than the maximum"],
            After::Closes,
        ),
    ));
    cases.push(engine_err(
        "name-snapshot-dotdot",
        "snapshot.create",
        vec![("share", t(VICTIM)), ("name", t("../x"))],
        "invalid_argument",
        &["snapshot name"],
    ));
    cases.push(engine_err(
        "name-clone-slash",
        "share.clone",
        vec![
            ("snapshot", t(VICTIM_SNAPSHOT)),
            ("share", t(VICTIM)),
            ("name", t("a/b")),
        ],
        "invalid_argument",
        &["share name", "'/'"],
    ));
    for (tag, op, args, says) in [
        (
            "pool-path",
            "share.create",
            vec![
                ("name", t("ok1")),
                ("size", n(MIB)),
                ("pool", t("../../etc")),
            ],
            "no pool",
        ),
        (
            "share-ref-path",
            "share.show",
            vec![("share", t("../../etc/passwd"))],
            "no share",
        ),
        (
            "share-ref-nul",
            "share.delete",
            vec![("share", t("a\0b"))],
            "no share",
        ),
        (
            "share-ref-10000-chars",
            "share.show",
            vec![("share", t(&"r".repeat(10_000)))],
            "no share",
        ),
        (
            "snapshot-ref-path",
            "snapshot.delete",
            vec![("snapshot", t("../../x"))],
            "",
        ),
        (
            "pool-show-path",
            "pool.show",
            vec![("name", t("../"))],
            "no pool",
        ),
        (
            "export-ref-path",
            "export.show",
            vec![("export", t("../../etc/exports"))],
            "no export",
        ),
    ] {
        cases.push(engine_err(
            &format!("ref-{tag}"),
            op,
            args,
            "not_found",
            &[says],
        ));
    }
    cases
}

fn sizes() -> Vec<Case> {
    let bignum = |bytes: &[u8]| Value::Tag(2, Box::new(Value::Bytes(bytes.to_vec())));
    let mut cases = Vec::new();
    for (tag, size, says) in [
        ("zero", n(0), "greater than 0"),
        ("u64-max", n(u64::MAX), "not a multiple of 512"),
        ("2p63", n(1 << 63), "larger than the maximum"),
        (
            "1pib-plus-512",
            n((1 << 50) + 512),
            "larger than the maximum",
        ),
        ("1000", n(1000), "not a multiple of 512"),
        ("511", n(511), "not a multiple of 512"),
    ] {
        cases.push(engine_err(
            &format!("size-{tag}"),
            "share.create",
            create(t("sz"), size),
            "invalid_argument",
            &[says],
        ));
    }
    for (tag, size, says) in [
        ("negative", Value::Integer((-1).into()), "-1"),
        (
            "negative-2p64",
            Value::Integer((-(1i128 << 64)).try_into().unwrap()),
            "expected u64",
        ),
        ("float", Value::Float(4096.0), "floating point"),
        ("float-nan", Value::Float(f64::NAN), "floating point"),
        (
            "float-infinity",
            Value::Float(f64::INFINITY),
            "floating point",
        ),
        ("text", t("4096"), "string"),
        ("text-suffix", t("10G"), "string"),
        ("bool", Value::Bool(true), "boolean"),
        ("null", Value::Null, "invalid type: null"),
        (
            "array",
            Value::Array(vec![n(4096)]),
            "invalid type: sequence",
        ),
    ] {
        cases.push(bad_args(
            &format!("size-{tag}"),
            "share.create",
            create(t("sz"), size),
            &["share.create: bad arguments", says],
        ));
    }
    cases.push(bad_args(
        "size-bignum-2p64",
        "share.create",
        create(t("sz"), bignum(&[1, 0, 0, 0, 0, 0, 0, 0, 0])),
        &["CBOR tag 2 at \"args.size\""],
    ));
    // The decoder reads a bignum that fits as the integer it is (RFC 8949 3.4.3).
    cases.push(engine_err(
        "size-bignum-1000-read-as-integer",
        "share.create",
        create(t("sz"), bignum(&[0x03, 0xe8])),
        "invalid_argument",
        &["size 1000 is not a multiple of 512"],
    ));
    cases.push(engine_err(
        "size-beyond-pool-preallocated",
        "share.create",
        vec![
            ("name", t("too-fat")),
            ("size", n(2 * POOL_FS_BYTES)),
            ("sparse", Value::Bool(false)),
        ],
        "no_space",
        &["too-fat"],
    ));
    cases.push(engine_err(
        "size-resize-preallocated-beyond-pool",
        "share.resize",
        vec![("share", t(FAT)), ("size", n(2 * POOL_FS_BYTES))],
        "no_space",
        &[],
    ));
    cases.push(engine_err(
        "size-resize-shrink",
        "share.resize",
        vec![("share", t(VICTIM)), ("size", n(4096))],
        "invalid_argument",
        &["shrinking", "not supported"],
    ));
    // Thin provisioning: a sparse share larger than the pool is allowed (docs 7.2), up to
    // the pool's over-subscription limit (20 × its size by default).
    cases.push(case(
        "size-4x-pool-sparse-is-thin",
        frame_of(&req(
            1,
            "share.create",
            create(t("thin-4x"), n(4 * POOL_FS_BYTES)),
        )),
        Stage::Accepted,
        Expect::Ok { id: 1 },
    ));
    cases.push(engine_err(
        "size-1pib-sparse-over-subscribed",
        "share.create",
        create(t("thin-1pib"), n(1 << 50)),
        "no_space",
        &["provisioned", "over the limit"],
    ));
    cases
}

fn metadata() -> Vec<Case> {
    let with = |m: Value| vec![("name", t("meta")), ("size", n(MIB)), ("metadata", m)];
    let entries =
        |count: usize| Value::Map((0..count).map(|i| (t(&format!("k{i}")), t("v"))).collect());
    let one = |k: &str, v: &str| map(vec![(k, t(v))]);
    let mut cases = Vec::new();
    for (tag, m, says) in [
        ("65-entries", entries(65), "at most 64"),
        ("10000-entries", entries(10_000), "at most 64"),
        ("empty-key", one("", "v"), "1 to 255 bytes"),
        ("256-byte-key", one(&"k".repeat(256), "v"), "1 to 255 bytes"),
        (
            "key-with-equals",
            one("a=b", "v"),
            "control character or '='",
        ),
        (
            "key-with-newline",
            one("a\nb", "v"),
            "control character or '='",
        ),
        (
            "4097-byte-value",
            one("k", &"v".repeat(4097)),
            "at most 4096",
        ),
        ("value-with-nul", one("k", "a\0b"), "contains NUL"),
        (
            "over-32k-in-all",
            Value::Map(
                (0..9)
                    .map(|i| (t(&format!("k{i}")), t(&"v".repeat(4096))))
                    .collect(),
            ),
            "at most 32768",
        ),
    ] {
        cases.push(engine_err(
            &format!("metadata-{tag}"),
            "share.create",
            with(m),
            "invalid_argument",
            &["metadata", says],
        ));
    }
    for (tag, m, says) in [
        ("array", Value::Array(vec![t("k"), t("v")]), "invalid type"),
        ("null", Value::Null, "invalid type"),
        ("integer-value", map(vec![("k", n(1))]), "invalid type"),
        (
            "integer-key",
            Value::Map(vec![(n(1), t("v"))]),
            "invalid type",
        ),
        (
            "bytes-key",
            Value::Map(vec![(Value::Bytes(b"k".to_vec()), t("v"))]),
            "byte array",
        ),
        (
            "nested-map",
            map(vec![("k", map(vec![("x", t("y"))]))]),
            "invalid type",
        ),
        (
            "duplicate-key",
            Value::Map(vec![(t("k"), t("a")), (t("k"), t("b"))]),
            "duplicate key \"k\"",
        ),
    ] {
        cases.push(bad_args(
            &format!("metadata-{tag}"),
            "share.create",
            with(m),
            &[says],
        ));
    }
    cases
}

fn types() -> Vec<Case> {
    let good = || vec![("name", t("typed")), ("size", n(MIB))];
    let plus = |k: &'static str, v: Value| {
        let mut a = good();
        a.push((k, v));
        a
    };
    let raw_args = |pairs: Vec<(Value, Value)>| {
        frame_of(&map(vec![
            ("id", n(1)),
            ("op", t("share.create")),
            ("args", Value::Map(pairs)),
        ]))
    };
    let parse_err =
        |says: &[&'static str]| err(Some(1), "invalid_argument", says, After::Continues);
    vec![
        bad_args(
            "args-unknown-field",
            "share.create",
            plus("evil", Value::Bool(true)),
            &["unknown field `evil`"],
        ),
        bad_args(
            "args-duplicate-field",
            "share.create",
            plus("name", t("other")),
            &["duplicate key \"name\" in \"args\""],
        ),
        bad_args(
            "args-missing-size",
            "share.create",
            vec![("name", t("typed"))],
            &["missing field `size`"],
        ),
        bad_args(
            "args-missing-name",
            "pool.show",
            vec![],
            &["missing field `name`"],
        ),
        bad_args(
            "args-hello-with-field",
            "hello",
            vec![("x", n(1))],
            &["unknown field `x`"],
        ),
        bad_args(
            "args-sparse-integer",
            "share.create",
            plus("sparse", n(1)),
            &["expected bool"],
        ),
        bad_args(
            "args-sparse-tagged",
            "share.create",
            plus("sparse", Value::Tag(1, Box::new(Value::Bool(false)))),
            &["tag 1"],
        ),
        bad_args(
            "args-name-bytes",
            "share.create",
            vec![("name", Value::Bytes(b"typed".to_vec())), ("size", n(MIB))],
            &["byte array"],
        ),
        bad_args(
            "args-name-uri-tag",
            "share.create",
            vec![
                ("name", Value::Tag(32, Box::new(t("typed")))),
                ("size", n(MIB)),
            ],
            &["tag 32"],
        ),
        bad_args(
            "args-recursive-null",
            "share.delete",
            vec![("share", t(VICTIM)), ("recursive", Value::Null)],
            &["invalid type: null"],
        ),
        case(
            "args-integer-keys",
            raw_args(vec![(n(0), t("typed")), (n(1), n(MIB))]),
            Stage::Parse,
            parse_err(&["bad arguments", "invalid type: integer"]),
        ),
        case(
            "args-bytes-keys",
            raw_args(vec![
                (Value::Bytes(b"name".to_vec()), t("typed")),
                (t("size"), n(MIB)),
            ]),
            Stage::Parse,
            parse_err(&["bad arguments", "byte array"]),
        ),
        case(
            "args-null-means-none",
            frame_of(&map(vec![
                ("id", n(1)),
                ("op", t("hello")),
                ("args", Value::Null),
            ])),
            Stage::Accepted,
            Expect::Ok { id: 1 },
        ),
        engine_err(
            "delete-with-snapshots-needs-recursive",
            "share.delete",
            vec![("share", t(VICTIM))],
            "has_dependents",
            &["snapshot"],
        ),
    ]
}

/// Argument cases.
pub fn cases() -> Vec<Case> {
    let mut all = names();
    all.extend(sizes());
    all.extend(metadata());
    all.extend(types());
    all.extend(super::targets::cases());
    all
}
