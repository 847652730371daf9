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
//! Arguments: the number of log entries and the puts per entry (a group-commit batch). Keys cycle
//! through 1,000 names, values are 100 bytes. The content digest and the size accounting are
//! switched on first, as the server keeps them (its status and the quota ask for them). A run with
//! 0 entries measures the set-up alone, to subtract.

use kvset_proto::raft::{log_command::Command, CommandBatch, LogCommand};
use kvset_proto::v1::{PutRequest, RequestId};
use kvset_server::raft::types::{Entry, LogId, Proto};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let entries: u64 = args.next().map_or(Ok(2000), |a| a.parse())?;
    let per_entry: u64 = args.next().map_or(Ok(8), |a| a.parse())?;
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
        for index in 1..=entries {
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
            let entry = Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
                payload: EntryPayload::Normal(Proto(command)),
            };
            sm.apply(vec![entry]).await?;
        }
        println!(
            "applied {} puts in {entries} entries; revision {}",
            entries * per_entry,
            sm.revision()
        );
        Ok(())
    })
}
