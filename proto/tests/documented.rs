//! The .proto files are the API's documentation: every field, enum value, message, enum and rpc
//! must carry a comment directly above it.

use std::path::Path;

fn undocumented(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("read proto file");
    let mut missing = Vec::new();
    let mut prev = "";
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        let is_decl = (l.contains(" = ")
            && l.ends_with(';')
            && !l.starts_with("syntax")
            && !l.starts_with("//"))
            || l.starts_with("message ")
            || l.starts_with("enum ")
            || l.starts_with("service ")
            || l.starts_with("rpc ")
            || l.starts_with("oneof ");
        let documented = prev.starts_with("//");
        // Request/response messages named after an rpc are documented by the rpc.
        let rpc_message = (l.starts_with("message ")
            && (l.contains("Request") || l.contains("Response")))
            || l.starts_with("oneof ");
        if is_decl && !documented && !rpc_message {
            missing.push(format!("{}:{}: {l}", path.display(), n + 1));
        }
        prev = l;
    }
    missing
}

#[test]
fn every_proto_declaration_is_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut missing = undocumented(&root.join("kvset/v1/kvset.proto"));
    missing.extend(undocumented(&root.join("kvset/raft/v1/raft.proto")));
    assert!(
        missing.is_empty(),
        "undocumented declarations:\n{}",
        missing.join("\n")
    );
}
