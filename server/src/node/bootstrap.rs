//! What a start does, decided from the ordinal, what the volume holds and the cluster record.
//!
//! | ordinal | volume                    | plan                                              |
//! |---------|---------------------------|---------------------------------------------------|
//! | 0       | empty, no record, nobody answers | [`StartPlan::Initialize`]: mint a cluster id, record it, become the only voter (the primary) |
//! | 0       | empty, the record (or a member) names cluster X | [`StartPlan::Readmit`]: wait for the others and be re-admitted into X; never mint |
//! | ≥ 1     | empty                     | [`StartPlan::Join`]: learn the cluster id, join as learner, catch up, get promoted |
//! | any     | Raft state (vote or log)  | [`StartPlan::Rejoin`]: start with the stored membership; never initialize again (join again if a re-join marker is pending, see [`super::rejoin`]) |
//! | any     | claimed, no Raft state, cluster id known | the same plan again (a join or an initialization that crashed half-way) |
//!
//! ## Why a cluster record
//!
//! kv-0 on an empty volume used to ask the other members for about a second whether a cluster
//! exists, and mint one when nobody answered. That cannot tell a first start from a full restart
//! in which kv-0's volume was lost: under `OrderedReady` kv-1 and kv-2 do not exist until kv-0 is
//! Ready, so nobody ever answers, kv-0 mints a second cluster, and kv-1 and kv-2 come back with
//! their data as the old one — two clusters behind one Service. Nothing inside the pods outlives
//! kv-0's volume and is reachable before kv-0 is Ready, so the fact "cluster X exists" is kept
//! outside them, in the cluster record ([`crate::cluster_record`]: a ConfigMap written through the
//! Kubernetes API, or a file outside kv-0's data dir for local and docker runs). It is written at
//! bootstrap *after* the id is in kv-0's volume and *before* Raft is initialized, so no cluster
//! exists without its record (a crash in between re-initializes with the same id and re-writes
//! the same record). The alternative of a cluster id pinned in the manifests was rejected: the
//! pin alone cannot tell kv-0 whether the cluster was already initialized (a wiped kv-0 would
//! initialize a second cluster under the same id — worse, because nothing could tell the two
//! apart), and it makes every deployment generate and keep a secret-like value by hand.
//!
//! ## Waiting to be re-admitted, under OrderedReady
//!
//! A kv-0 that finds the record but has no data plans [`StartPlan::Readmit`]. If it waited
//! un-Ready, Kubernetes would never create kv-1 and kv-2, which hold the data. So it reports
//! *ready* while it knows no leader (as a voter that restarted with data already does), serves no
//! client data (every KV request answers UNAVAILABLE saying it waits for the existing cluster to
//! re-admit it), and logs what it waits for. When kv-1 and kv-2 are back, they are two of three
//! voters: they elect a leader, and kv-0's join request makes the leader remove the old kv-0
//! voter and add it back as a learner, then promote it — the way any wiped member is re-admitted.
//! From the moment it knows a leader until it is a voter again it is not ready. The record is
//! never overwritten with another id; to start over, delete all data *and* the record.
//!
//! kv-0 writes the cluster id into its volume *before* calling `initialize`; if it crashes in
//! between, the volume has an id but no Raft state, and the next start initializes again with
//! the same id (`initialize` on an empty log is idempotent in effect). A joining member records
//! the id it learned before asking to join; a crash after that leaves the same state, and it asks
//! again (adding a learner twice is harmless).

/// The decision for this start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartPlan {
    /// Initialize a new cluster with this member as its only voter, under this id.
    Initialize { cluster_id: String },
    /// Join an existing cluster through its members.
    Join,
    /// kv-0 on an empty volume, while cluster `cluster_id` exists: wait (ready, serving nothing)
    /// until the other members are back, and ask them to re-admit it.
    Readmit { cluster_id: String },
    /// Start with the membership in the Raft state.
    Rejoin,
}

/// What the volume holds, as far as the decision cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeState {
    /// The cluster id recorded in the volume.
    pub cluster_id: Option<String>,
    /// The Raft store holds a vote or log entries or a snapshot.
    pub has_raft_state: bool,
    /// The volume's cluster id was minted by this member to initialize (ordinal 0 only).
    pub minted_here: bool,
    /// A cluster id some other member reported when asked at start-up (ordinal 0 on an empty
    /// volume asks), if any.
    pub existing_cluster: Option<String>,
    /// The cluster id in the cluster record, which outlives kv-0's volume (ordinal 0 on an
    /// empty volume reads it), if any.
    pub recorded_cluster: Option<String>,
}

/// Decides the plan. `new_cluster_id` is called only when a cluster id must be minted.
pub fn plan(
    ordinal: u64,
    volume: &VolumeState,
    new_cluster_id: impl FnOnce() -> String,
) -> StartPlan {
    if volume.has_raft_state {
        return StartPlan::Rejoin;
    }
    if ordinal == 0 {
        let known = volume
            .recorded_cluster
            .as_ref()
            .or(volume.existing_cluster.as_ref());
        return match (&volume.cluster_id, known) {
            // Crashed between recording the id and initializing: finish with the same id. (A
            // record naming another cluster makes the record write refuse, loudly.)
            (Some(id), _) if volume.minted_here => StartPlan::Initialize {
                cluster_id: id.clone(),
            },
            // kv-0 was wiped and had learned its id from the cluster before a crash.
            (Some(id), _) => StartPlan::Readmit {
                cluster_id: id.clone(),
            },
            // The record (or a member that answered) says the cluster exists: never mint.
            (None, Some(id)) => StartPlan::Readmit {
                cluster_id: id.clone(),
            },
            (None, None) => StartPlan::Initialize {
                cluster_id: new_cluster_id(),
            },
        };
    }
    StartPlan::Join
}

/// Whether a start under `plan` must go through the join protocol (ask to be added, caught up,
/// promoted) before it counts as a member. `rejoin_pending`: the volume holds a re-join marker
/// (see [`super::rejoin`]); `voter_locally`: the stored membership lists this member as a voter.
/// A pending re-join always joins again: the local membership of a member that lost its volume
/// may already show it a voter before the leader re-admitted it.
pub fn must_join(plan: &StartPlan, rejoin_pending: bool, voter_locally: bool) -> bool {
    match plan {
        StartPlan::Initialize { .. } => false,
        StartPlan::Join | StartPlan::Readmit { .. } => true,
        StartPlan::Rejoin => rejoin_pending || !voter_locally,
    }
}

/// A fresh random cluster id: 128 bits, hex.
pub fn mint_cluster_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(cluster_id: Option<&str>, has_raft_state: bool, minted_here: bool) -> VolumeState {
        VolumeState {
            cluster_id: cluster_id.map(str::to_string),
            has_raft_state,
            minted_here,
            ..Default::default()
        }
    }

    #[test]
    fn ordinal_zero_on_an_empty_volume_initializes() {
        assert_eq!(
            plan(0, &vol(None, false, false), || "c1".into()),
            StartPlan::Initialize {
                cluster_id: "c1".into()
            }
        );
    }

    #[test]
    fn higher_ordinals_on_an_empty_volume_join() {
        for ordinal in [1, 2, 7] {
            assert_eq!(
                plan(ordinal, &vol(None, false, false), || panic!(
                    "must not mint"
                )),
                StartPlan::Join
            );
        }
    }

    #[test]
    fn any_member_with_raft_state_rejoins_and_never_initializes() {
        for ordinal in [0, 1, 2] {
            assert_eq!(
                plan(ordinal, &vol(Some("c1"), true, ordinal == 0), || panic!(
                    "must not mint"
                )),
                StartPlan::Rejoin
            );
        }
    }

    #[test]
    fn half_done_starts_finish_the_same_way() {
        // kv-0 crashed after recording its minted id: initialize again with the same id.
        assert_eq!(
            plan(0, &vol(Some("c1"), false, true), || panic!("must not mint")),
            StartPlan::Initialize {
                cluster_id: "c1".into()
            }
        );
        // A joiner crashed after learning the id: ask to join again.
        assert_eq!(
            plan(2, &vol(Some("c1"), false, false), || panic!(
                "must not mint"
            )),
            StartPlan::Join
        );
        // A wiped kv-0 that learned the id from the cluster waits to be re-admitted rather than
        // forking a new cluster.
        assert_eq!(
            plan(0, &vol(Some("c1"), false, false), || panic!(
                "must not mint"
            )),
            StartPlan::Readmit {
                cluster_id: "c1".into()
            }
        );
    }

    #[test]
    fn a_wiped_ordinal_zero_waits_for_the_cluster_that_lived_on() {
        let mut v = vol(None, false, false);
        v.existing_cluster = Some("c1".into());
        assert_eq!(
            plan(0, &v, || panic!("must not mint")),
            StartPlan::Readmit {
                cluster_id: "c1".into()
            }
        );
    }

    #[test]
    fn a_wiped_ordinal_zero_alone_never_mints_when_the_record_knows_the_cluster() {
        // The full-restart case: nobody answers the probe (kv-1, kv-2 are not created yet), but
        // the cluster record outlived kv-0's volume.
        let v = VolumeState {
            recorded_cluster: Some("c1".into()),
            ..Default::default()
        };
        assert_eq!(
            plan(0, &v, || panic!("must not mint a second cluster")),
            StartPlan::Readmit {
                cluster_id: "c1".into()
            }
        );
        // The record is only consulted by kv-0; the others join as always.
        assert_eq!(plan(1, &v, || panic!("must not mint")), StartPlan::Join);
    }

    #[test]
    fn a_pending_rejoin_joins_again_whatever_the_local_membership_says() {
        // Crashed while re-joining after Raft traffic arrived: the log may already list this
        // member as a voter, but only the leader's confirmation ends the re-join.
        assert!(must_join(&StartPlan::Rejoin, true, true));
        assert!(must_join(&StartPlan::Rejoin, false, false));
        assert!(!must_join(&StartPlan::Rejoin, false, true));
        assert!(must_join(&StartPlan::Join, false, false));
        assert!(must_join(
            &StartPlan::Readmit {
                cluster_id: "c1".into()
            },
            false,
            false
        ));
        assert!(!must_join(
            &StartPlan::Initialize {
                cluster_id: "c1".into()
            },
            false,
            false
        ));
    }

    #[test]
    fn minted_ids_are_distinct() {
        assert_ne!(mint_cluster_id(), mint_cluster_id());
        assert_eq!(mint_cluster_id().len(), 32);
    }
}
