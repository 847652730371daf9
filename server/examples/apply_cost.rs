//! Applies a fixed stream of puts to a fresh store, for counting the instructions the apply path
//! costs per put: `valgrind --tool=callgrind` counts instructions, not seconds, so the figure is
//! the same on a busy machine as on a quiet one (see docs/BENCHMARKS.md, "CPU per put").
//!
//! ```sh
//! cargo build --release -p kvset-server --example apply_cost
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     target/release/examples/apply_cost 2000 8
//! ```
//!
//! Arguments: the number of log entries, the puts per entry (a group-commit batch), and
//! optionally a history retention R: after every entry that takes the revision R/10 past the
//! last compaction, a compaction entry forgets everything but the last R revisions, as automatic
//! compaction does (0 or absent: never compacted). Keys cycle through 1,000 names, values are
//! 100 bytes. The content digest and the size accounting are
//! switched on first, as the server keeps them (its status and the quota ask for them). A run with
//! 0 entries measures the set-up alone, to subtract.

use kvset_proto::raft::{log_command::Command, CommandBatch, LogCommand};
use kvset_proto::v1::{CompactRequest, PutRequest, RequestId};
use kvset_server::raft::types::{Entry, LogId, Proto};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let entries: u64 = args.next().map_or(Ok(2000), |a| a.parse())?;
    let per_entry: u64 = args.next().map_or(Ok(8), |a| a.parse())?;
    let retention: i64 = args.next().map_or(Ok(0), |a| a.parse())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let store = kvset_server::store::open(dir.path())?;
        let mut sm = store.state_machine();
        sm.state_hash()?;
        sm.logical_size()?;
        let value = vec![b'v'; 100];
        let mut sequence = 0;
        let (mut index, mut compacted, mut compactions) = (0, 0, 0);
        let mut entry = |command| {
            index += 1;
            Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
                payload: EntryPayload::Normal(Proto(command)),
            }
        };
        for _ in 0..entries {
            let commands = (0..per_entry)
                .map(|_| {
                    sequence += 1;
                    LogCommand {
                        request_id: Some(RequestId {
                            client_id: 7,
                            sequence,
                        }),
                        command: Some(Command::Put(PutRequest {
                            key: format!("key-{:04}", sequence % 1000).into_bytes(),
                            value: value.clone(),
                            ..Default::default()
                        })),
                    }
                })
                .collect();
            let command = LogCommand {
                request_id: None,
                command: Some(Command::Batch(CommandBatch { commands })),
            };
            sm.apply(vec![entry(command)]).await?;
            let target = sm.revision() - retention;
            if retention > 0 && target - compacted >= (retention / 10).max(1) {
                let compact = LogCommand {
                    request_id: None,
                    command: Some(Command::Compact(CompactRequest { revision: target })),
                };
                sm.apply(vec![entry(compact)]).await?;
                (compacted, compactions) = (target, compactions + 1);
            }
        }
        println!(
            "applied {} puts in {entries} entries; revision {}; {compactions} compactions, \
             the last to {compacted}",
            entries * per_entry,
            sm.revision()
        );
        Ok(())
    })
}
