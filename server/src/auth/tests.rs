use super::*;

const POLICY: &str = r#"
roles:
  app:      { read: ["app/"], write: ["app/"] }
  readonly: { read: [""] }
  admin:    { read: [""], write: [""], admin: true }
bindings:
  cn:operator: [admin]
  token:app: [app]
  anonymous: [readonly]
"#;

fn authorizer(dir: &tempfile::TempDir, policy: &str, tokens: &str) -> Arc<Authorizer> {
    let p = dir.path().join("policy.yaml");
    let t = dir.path().join("tokens");
    std::fs::write(&p, policy).unwrap();
    std::fs::write(&t, tokens).unwrap();
    Authorizer::load(Some(AuthSettings {
        policy: p,
        tokens: Some(t),
        cert_identity: CertIdentity::Cn,
    }))
    .unwrap()
}

fn client(id: &str) -> Caller {
    Caller::Client(id.parse().unwrap())
}

fn key(k: &str) -> KeyRange {
    KeyRange::single(k.as_bytes())
}

fn token_line(name: &str, token: &str) -> String {
    format!("{name} {}\n", hex::encode(Sha256::digest(token.as_bytes())))
}

#[test]
fn each_role_is_allowed_exactly_what_it_grants() {
    let dir = tempfile::tempdir().unwrap();
    let a = authorizer(&dir, POLICY, "");
    let app = client("token:app");
    assert!(a
        .check(
            Some(&app),
            &[Need::Write(key("app/1")), Need::Read(key("app/1"))]
        )
        .is_ok());
    let denied = a
        .check(Some(&app), &[Need::Write(key("other"))])
        .unwrap_err();
    assert_eq!(denied.permission, Permission::Write);
    let message = denied.to_string();
    assert!(
        message.contains("token:app may not write key \"other\""),
        "{message}"
    );
    assert!(
        message.contains("its roles (app) grant write on keys with prefix \"app/\""),
        "{message}"
    );
    // a range crossing the prefix boundary
    let crossing = KeyRange::span(b"app/", b"apq");
    assert!(a.check(Some(&app), &[Need::Read(crossing)]).is_err());
    assert!(a
        .check(Some(&app), &[Need::Admin("remove a member")])
        .is_err());
    assert!(a
        .check(Some(&app), &[Need::SomeWrite("grant a lease")])
        .is_ok());

    let anon = client("anonymous");
    assert!(a
        .check(Some(&anon), &[Need::Read(KeyRange::prefix(b""))])
        .is_ok());
    let denied = a
        .check(Some(&anon), &[Need::SomeWrite("grant a lease")])
        .unwrap_err();
    assert!(
        denied
            .to_string()
            .contains("its roles (readonly) grant no write"),
        "{denied}"
    );

    let stranger = client("cn:stranger");
    let denied = a
        .check(Some(&stranger), &[Need::Admin("take a snapshot")])
        .unwrap_err();
    assert!(
        denied
            .to_string()
            .contains("cn:stranger may not take a snapshot (admin): it holds no role;"),
        "{denied}"
    );
    assert!(a
        .check(
            Some(&client("cn:operator")),
            &[Need::Admin("x"), Need::Write(KeyRange::prefix(b""))]
        )
        .is_ok());
}

#[test]
fn forwarded_and_member_requests_were_authorized_where_they_came_in() {
    let dir = tempfile::tempdir().unwrap();
    let a = authorizer(&dir, POLICY, "");
    let forwarded = Caller::Forwarded("cn:stranger".parse().unwrap());
    assert!(a.check(Some(&forwarded), &[Need::Admin("x")]).is_ok());
    assert!(a.check(Some(&Caller::Member), &[Need::Admin("x")]).is_ok());
    // no caller at all: refused, never waved through
    assert!(a.check(None, &[Need::Read(key("a"))]).is_err());
}

#[test]
fn off_allows_everything_and_says_so() {
    let a = Authorizer::off();
    assert!(!a.is_on());
    assert_eq!(a.describe(), "off");
    assert!(a.check(None, &[Need::Admin("x")]).is_ok());
    assert!(a.grants(&Identity::Anonymous).admin);
}

#[test]
fn tokens_identify_and_unknown_tokens_are_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let a = authorizer(&dir, POLICY, &token_line("app", "s3cret"));
    let with = |value: &str| {
        let mut r = Request::new(());
        r.metadata_mut()
            .insert("authorization", value.parse().unwrap());
        r
    };
    assert_eq!(
        a.identify(&with("Bearer s3cret")).unwrap(),
        Identity::Token("app".into())
    );
    let unknown = a.identify(&with("Bearer guess")).unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        a.identify(&with("Basic x")).unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    assert_eq!(a.identify(&Request::new(())).unwrap(), Identity::Anonymous);
}

#[test]
fn a_changed_policy_is_taken_and_a_broken_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let a = authorizer(&dir, POLICY, "");
    let anon = client("anonymous");
    assert!(a.check(Some(&anon), &[Need::Read(key("x"))]).is_ok());
    assert!(!a.reload_if_changed(), "nothing changed");
    std::fs::write(
        dir.path().join("policy.yaml"),
        POLICY.replace("anonymous: [readonly]", ""),
    )
    .unwrap();
    assert!(a.reload_if_changed());
    assert!(a.check(Some(&anon), &[Need::Read(key("x"))]).is_err());
    std::fs::write(
        dir.path().join("policy.yaml"),
        "roles:\n  x: { reed: [] }\n",
    )
    .unwrap();
    assert!(!a.reload_if_changed());
    assert!(
        a.describe().contains("the last reload failed"),
        "{}",
        a.describe()
    );
    assert!(a.describe().contains("line 2"), "{}", a.describe());
    // the policy before the broken one still holds
    assert!(a
        .check(Some(&client("token:app")), &[Need::Write(key("app/x"))])
        .is_ok());
}

#[test]
fn a_broken_policy_at_start_up_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.yaml");
    std::fs::write(&p, "bindings:\n  token:app: [nope]\n").unwrap();
    let err = Authorizer::load(Some(AuthSettings {
        policy: p,
        tokens: None,
        cert_identity: CertIdentity::Cn,
    }))
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("line 2") && err.contains("no role named \"nope\""),
        "{err}"
    );
}

#[test]
fn ranges_are_described_in_words() {
    assert_eq!(describe_range(&key("a")), "key \"a\"");
    assert_eq!(
        describe_range(&KeyRange::prefix(b"app/")),
        "keys with prefix \"app/\""
    );
    assert_eq!(
        describe_range(&KeyRange::span(b"a", b"c")),
        "keys [\"a\", \"c\")"
    );
    assert_eq!(
        describe_range(&KeyRange::span(b"a", b"")),
        "keys from \"a\" on"
    );
    assert_eq!(describe_range(&KeyRange::prefix(b"")), "every key");
}

fn certificate(cn: &str, sans: Vec<rcgen::SanType>) -> Vec<u8> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.subject_alt_names = sans;
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn certificates_name_their_holder_by_cn_or_san() {
    let uri = rcgen::SanType::URI("spiffe://kvset/app".try_into().unwrap());
    let dns = rcgen::SanType::DnsName("app.example".try_into().unwrap());
    let both = certificate("operator", vec![dns.clone(), uri]);
    assert_eq!(
        certificate_identity(&both, CertIdentity::Cn),
        Some(Identity::Cn("operator".into()))
    );
    assert_eq!(
        certificate_identity(&both, CertIdentity::San),
        Some(Identity::San("spiffe://kvset/app".into())),
        "a URI SAN wins over a DNS one"
    );
    assert_eq!(
        certificate_identity(&certificate("x", vec![dns]), CertIdentity::San),
        Some(Identity::San("app.example".into()))
    );
    assert_eq!(
        certificate_identity(&certificate("only-cn", vec![]), CertIdentity::San),
        Some(Identity::Cn("only-cn".into())),
        "no SAN: the CN"
    );
    assert_eq!(
        certificate_identity(b"not a certificate", CertIdentity::Cn),
        None
    );
}

/// The fuzz target's committed seeds (`fuzz/seeds/auth_policy/`) stay valid input: the policy
/// parses as a policy and the tokens file as tokens.
#[test]
fn the_committed_fuzz_seeds_parse() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/auth_policy");
    let policy = std::fs::read_to_string(root.join("policy-example.yaml")).unwrap();
    assert_eq!(
        Policy::parse("policy-example.yaml", &policy)
            .unwrap()
            .size(),
        (4, 4)
    );
    let tokens = std::fs::read_to_string(root.join("tokens")).unwrap();
    let tokens = Tokens::parse("tokens", &tokens).unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens.name_of("password"), Some("app"));
}
