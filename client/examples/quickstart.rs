//! kvset quickstart: connect, write through the primary, read from a secondary, and increment a
//! counter with a compare-and-swap loop.
//!
//! Start a local three-member cluster (`kvset-server local`), then:
//!
//! ```text
//! cargo run -p kvset-client --example quickstart
//! KVSET_ENDPOINTS=kv-0.kv:7379,kv-1.kv:7379 cargo run -p kvset-client --example quickstart
//! ```

use std::time::Duration;

use kvset_client::{Client, KeyRange, RangeOptions, ReadOptions, DEFAULT_ENDPOINTS};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Any subset of the members works: the client finds the primary by itself. Building the
    // client makes no connection; the first call does.
    let endpoints = std::env::var("KVSET_ENDPOINTS").unwrap_or_else(|_| DEFAULT_ENDPOINTS.into());
    let client = Client::builder()
        .endpoints([endpoints])
        .retry_deadline(Duration::from_secs(10))
        .connect()
        .await?;

    // 1. Writes go through the primary. The response header says who served it; the client
    //    remembers the leader for the next calls.
    let put = client.put("quickstart/greeting", "hello").await?;
    println!(
        "put served by {} ({}) at revision {}",
        put.header.member, put.header.role, put.header.revision
    );
    if let Some(leader) = client.leader() {
        println!("known leader: {:?} at {:?}", leader.name, leader.endpoint);
    }

    // 2. A linearizable read (the default) never returns stale data.
    let kv = client.get("quickstart/greeting").await?;
    println!(
        "linearizable read: {:?}",
        kv.as_ref().and_then(|kv| kv.value_str())
    );

    // 3. A stale read pinned to a secondary: served from kv-1's local state without asking the
    //    leader. The header's revision says how far kv-1 has applied.
    match client
        .get_response(
            "quickstart/greeting",
            &ReadOptions::stale().on_member("kv-1"),
        )
        .await
    {
        Ok(stale) => println!(
            "stale read on {} (applied up to revision {}): {:?}",
            stale.header.member,
            stale.header.revision,
            stale.kv.as_ref().and_then(|kv| kv.value_str())
        ),
        Err(e) => println!("stale read on kv-1 failed (is kv-1 running?): {e}"),
    }

    // 4. Increment a counter with a compare-and-swap loop. `cas` returns Ok(false) when another
    //    writer got there first; read again and retry. Every attempt of one `cas` call carries
    //    the same exactly-once id, so a retry after a lost answer cannot increment twice.
    let key = "quickstart/counter";
    let value = loop {
        let current = client.get(key).await?;
        let n: u64 = match &current {
            None => 0,
            Some(kv) => kv.value_str().unwrap_or("0").parse()?,
        };
        let next = (n + 1).to_string();
        let expected = current.as_ref().map(|kv| kv.value.as_slice());
        if client.cas(key, expected, &next).await? {
            break next;
        }
    };
    println!("counter is now {value}");

    // 5. List what the quickstart wrote, a page at a time under the hood.
    use futures::TryStreamExt;
    let keys: Vec<_> = client
        .range_with(
            KeyRange::prefix("quickstart/"),
            RangeOptions::new().keys_only(),
        )
        .try_collect()
        .await?;
    for kv in keys {
        println!("key: {}", String::from_utf8_lossy(&kv.key));
    }
    Ok(())
}
