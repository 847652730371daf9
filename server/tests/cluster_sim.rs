//! Node behaviours in an in-process cluster, in simulated time (see `sim/mod.rs` for the script
//! commands): each test is a short script of what happens and what must follow.

mod sim;

use sim::run_script;

#[test]
fn kv0_bootstraps_and_the_others_join_in_ordinal_order() {
    run_script(
        "
        start kv-0
        await leader kv-0
        await voters kv-0
        start kv-1
        await voters kv-0 kv-1
        start kv-2
        await voters kv-0 kv-1 kv-2
        await learners
        put a 1 via kv-2              # a follower forwards the write to the leader
        get a via kv-1 -> 1           # linearizable on a follower (ReadIndex from the leader)
        get a via kv-0 -> 1
        get missing via kv-2 -> none
        ",
    );
}

#[test]
fn a_leader_that_stops_hands_off_to_the_lowest_caught_up_voter_without_an_election_timeout() {
    run_script(
        "
        bootstrap 3
        put a 1 via kv-0
        note term
        stop kv-0                       # SIGTERM: hand off, then leave
        await leader kv-1 within 300ms  # an election would wait 400-600 ms for its timeout
        expect term +1
        get a via kv-2 -> 1
        put a 2 via kv-2
        get a via kv-1 -> 2
        ",
    );
}

#[test]
fn the_preferred_primary_takes_leadership_back_once_it_has_caught_up() {
    run_script(
        "
        bootstrap 3
        isolate kv-0
        await leader-not kv-0
        put b 2 via kv-1
        put c 3 via kv-2
        heal
        await leader kv-0               # kv-0 catches up, then takes leadership back
        get b via kv-0 -> 2
        get c via kv-0 -> 3
        ",
    );
}

#[test]
fn the_membership_rules_refuse_unsafe_removals_with_a_reason() {
    run_script(
        "
        bootstrap 3
        remove kv-1 -> error FAILED_PRECONDITION remove the highest ordinal first (kv-2)
        remove kv-4 -> error NOT_FOUND member 4 is not in the cluster
        isolate kv-1
        remove kv-2 -> error FAILED_PRECONDITION a quorum needs 2
        heal
        remove kv-2 -> ok
        await voters kv-0 kv-1
        remove kv-1 -> ok
        await voters kv-0
        remove kv-0 -> error FAILED_PRECONDITION is the last voter
        put still 1 via kv-0            # a cluster of one still takes writes
        get still via kv-0 -> 1
        ",
    );
}

#[test]
fn an_isolated_old_leader_serves_no_linearizable_read_and_acknowledges_no_write() {
    run_script(
        "
        bootstrap 3
        put a 1 via kv-0
        isolate kv-0
        await leader-not kv-0
        put a 2 via kv-1
        get a via kv-0 -> error         # it cannot confirm its leadership: never the stale 1
        get a via kv-0 stale -> 1       # a stale read may answer from its own state
        put a 3 via kv-0 -> error       # no quorum behind it: never acknowledged
        heal
        await leader kv-0               # back in charge after catching up
        get a via kv-0 -> 2             # its own entry was replaced, not applied
        get a via kv-2 -> 2
        ",
    );
}

#[test]
fn concurrent_writes_share_log_entries() {
    run_script(
        "
        bootstrap 3
        burst 64 via kv-0 -> entries at most 16
        burst 64 via kv-2 -> entries at most 16   # forwarded writes batch on the leader too
        ",
    );
}

#[test]
fn a_member_that_lost_its_volume_is_readmitted_and_catches_up() {
    run_script(
        "
        bootstrap 3
        put a 1 via kv-0
        stop kv-2
        wipe kv-2
        put b 2 via kv-0                # the two others still form a quorum
        start kv-2                      # empty volume: it must ask to be re-admitted
        await voters kv-0 kv-1 kv-2
        await leader kv-0               # kv-2 knows the leader again
        get a via kv-2 -> 1
        get b via kv-2 -> 2
        ",
    );
}

#[test]
fn kv0_on_an_empty_volume_waits_to_be_readmitted_instead_of_starting_a_second_cluster() {
    run_script(
        "
        bootstrap 3
        put a 1 via kv-0
        stop kv-0
        wipe kv-0                       # kv-0 loses its volume; the cluster record remains
        await leader-not kv-0
        put b 2 via kv-1
        start kv-0                      # must not bootstrap a new cluster of its own
        await voters kv-0 kv-1 kv-2
        await leader kv-0               # re-admitted, caught up, preferred primary again
        get a via kv-0 -> 1
        get b via kv-0 -> 2
        ",
    );
}

#[test]
fn a_voter_that_asks_to_join_again_is_demoted_before_it_counts() {
    run_script(
        "
        bootstrap 3
        put a 1 via kv-0
        stop kv-1
        wipe kv-1
        stop kv-2                       # now only kv-0 runs: no quorum
        put b 2 via kv-0 -> error       # a wiped kv-1 must not make a quorum with kv-0 ...
        start kv-1                      # ... not even once it is back, empty
        put b 2 via kv-0 -> error
        start kv-2                      # kv-2 has the data: quorum again, kv-1 re-admitted
        await voters kv-0 kv-1 kv-2
        await leader kv-0
        put b 2 via kv-0
        get a via kv-1 -> 1
        get b via kv-1 -> 2
        ",
    );
}

#[test]
fn a_wiped_kv0_readmitted_after_a_scale_down_and_up_forgets_nothing() {
    run_script(
        "
        snapshots every 20 keep 5
        bootstrap 3
        fill 200 via kv-0
        size 1
        stop kv-2
        stop kv-1
        await voters kv-0
        fill 200 via kv-0               # kv-0 snapshots while it is the only voter
        size 3
        start kv-1                      # departed: joins anew from kv-0's snapshot
        await voters kv-0 kv-1
        start kv-2
        await voters kv-0 kv-1 kv-2
        fill 20 via kv-0                # kv-1 still holds the snapshot it installed
        stop kv-0                       # hands leadership off
        wipe kv-0
        start kv-0                      # re-admitted through the new leader
        await voters kv-0 kv-1 kv-2
        fill 20 via kv-1
        kill kv-1
        await leader-not kv-1
        fill 20 via kv-0
        verify via kv-0
        start kv-1
        verify via kv-1
        ",
    );
}

#[test]
fn a_restarting_member_is_not_told_it_was_removed_by_a_member_that_is_behind() {
    // kv-2 is cut off from the leader before kv-3 joins, so its membership lacks kv-3. When kv-3
    // restarts and only kv-2 answers, kv-2's stale view must not make kv-3 conclude that it was
    // removed (and discard its volume): only the leader's committed membership says that.
    run_script(
        "
        bootstrap 3
        cut kv-2 kv-0
        cut kv-2 kv-1
        size 4
        start kv-3
        sleep 10s
        put a 1 via kv-0
        kill kv-3
        cut kv-3 kv-0
        cut kv-3 kv-1
        start kv-3                      # only kv-2, which lags, answers it
        heal
        await voters kv-0 kv-1 kv-2 kv-3
        get a via kv-3 stale -> 1
        ",
    );
}
