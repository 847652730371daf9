//! The authorization policy file (`--auth-policy`, YAML) and the bearer tokens file
//! (`--auth-tokens`): both come from a ConfigMap or Secret an operator edits, and a member
//! re-reads them while it runs, so a malformed file must be an error that names its line, never
//! a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = kvset_server::auth::Policy::parse("policy.yaml", text);
        let _ = kvset_server::auth::Tokens::parse("tokens", text);
    }
});
